"""The evaluate step's human outputs: DVC plots rows and a self-contained HTML report.

- charts: inline SVG bar and line charts, with no JS library.
- data: the metric values the report and the DVC plots share: which, grouped how, shown how.
- page: the HTML page assembled from its sections, and the plots rows.
"""

__all__ = ["charts", "data", "page"]
