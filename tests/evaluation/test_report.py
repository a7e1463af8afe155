"""The evaluate report: a self-contained HTML page with inline SVG charts, and the DVC plots rows."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from steps.evaluation.report.charts import ticks
from steps.evaluation.report.data import metric_groups, plots_data
from steps.evaluation.report.page import render_report

XSS = '<script>alert("pwned")</script>'


def _metrics(passed: bool = True, production: bool = True) -> dict:
    m = {
        "candidate": {"test_perplexity": 8.2, "rougeL": 0.41, "bleu": 0.2, "bertscore_f1": 0.88,
                      "judge_overall": 4.1, "pairwise_win_rate": 0.63, "safety_hits": 0, "custom_score": 1.5},
        "base": {"test_perplexity": 12.5, "rougeL": 0.30, "bleu": 0.25, "bertscore_f1": 0.85,
                 "judge_overall": 3.4, "safety_hits": 1, "custom_score": float("nan")},
        "gate": {"passed": passed, "reasons": [] if passed else ["rougeL 0.41 < production 0.45 - 0.01",
                                                                   "safety_hits 2 > 0 allowed"],
                 "checks": [{"name": "beats_base", "metric": "rougeL", "value": 0.41, "threshold": 0.30,
                             "passed": True, "reason": "rougeL improves on base"}]},
        "production_version": "v3" if production else None,
    }
    if production:
        m["production"] = {"test_perplexity": 9.0, "rougeL": 0.45, "judge_overall": 4.3, "safety_hits": 0}
    return m


CURVES = {"train_loss": [[i, 3.0 - 0.1 * i] for i in range(1, 21)], "eval_loss": [[10, 2.4], [20, 2.1]]}
EXAMPLES = [
    {"id": "support-7", "prompt": "How do I reset my password?", "reference": "Go to Settings > Account.",
     "candidate": XSS + " and " + "very long answer " * 40, "base": "No idea.", "production": "Settings.",
     "score": 0.05, "base_score": 0.1},
    {"id": "faq-2", "prompt": [{"role": "user", "content": "Hi & bye"}], "reference": "Hello",
     "candidate": "Hello", "base": "Hey", "score": 0.2, "base_score": None},
]
META = {"model_dir": "models/train", "base_model": "smollm2-135m-instruct", "production_version": "v3",
        "git_revision": "abc123", "judge": "none (heuristic only)", "generated_at": "2025-01-01T00:00:00Z",
        "data": {"test.jsonl": "sha256:aa", "heldout.jsonl": "sha256:bb"}}


class _Checker(HTMLParser):
    """Counts open/close tags of the elements the report nests, and collects <script> bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.depth: dict[str, int] = {}
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.depth[tag] = self.depth.get(tag, 0) + 1
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self.depth[tag] = self.depth.get(tag, 0) - 1
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def _check_renders(page: str) -> _Checker:
    """The page parses, its containers are balanced and every inline SVG is well-formed XML."""
    checker = _Checker()
    checker.feed(page)
    for tag in ("html", "body", "table", "tr", "td", "details", "section", "svg", "dl"):
        assert checker.depth.get(tag, 0) == 0, f"unbalanced <{tag}>"
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report must not load anything"
    return checker


@pytest.mark.parametrize("passed", [True, False])
def test_full_report_renders_with_three_models(passed):
    metrics = _metrics(passed=passed)
    page = render_report(metrics, CURVES, EXAMPLES, META)
    _check_renders(page)
    assert page.count("<svg") == len(metric_groups(metrics)) + 1  # one bar chart per group + the curves
    assert ('class="banner pass"' if passed else 'class="banner fail"') in page
    for reason in metrics["gate"]["reasons"]:
        assert reason.replace(">", "&gt;").replace("<", "&lt;") in page
    assert "Δ vs base" in page and "Δ vs production" in page and "<th>production</th>" in page
    assert page.count("↓ lower is better") == 2  # test_perplexity and safety_hits charts
    assert "custom_score" in page  # a metric outside the known groups still shows, under "Other"
    assert "sha256:bb" in page and "smollm2-135m-instruct" in page
    assert "user: Hi &amp; bye" in page  # a chat prompt renders as 'role: content' text


def test_deltas_respect_direction_and_missing_values_show_a_dash():
    page = render_report(_metrics(), CURVES, EXAMPLES, META)
    row = lambda name: re.search(rf'<tr><td class="k">{name} .*?</tr>', page).group(0)  # noqa: E731
    assert '<td class="n better">-4.3 (-34.4%)</td>' in row("test_perplexity")  # lower perplexity is better
    assert '<td class="n better">+0.11 (+36.7%)</td>' in row("rougeL")
    assert '<td class="n worse">-0.04 (-8.9%)</td>' in row("rougeL")  # worse than production
    assert '<td class="n worse">-0.05 (-20.0%)</td>' in row("bleu")
    assert '<td class="n better">-1 (-100.0%)</td><td class="n">0</td><td class="n same">0</td>' in row("safety_hits")
    assert row("custom_score").count("—") == 4  # NaN base, no production value, both deltas
    assert row("pairwise_win_rate").count("—") == 4


def test_model_text_is_escaped_everywhere():
    metrics = _metrics(passed=False)
    metrics["gate"]["reasons"].append(XSS)
    meta = {**META, "judge": XSS}
    examples = [{**EXAMPLES[0], "id": XSS, "reference": XSS, "base": XSS}]
    page = render_report(metrics, CURVES, examples, meta)
    checker = _check_renders(page)
    assert 'alert("pwned")' not in page and "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    assert all("pwned" not in s for s in checker.scripts)


def test_metric_signatures_show_each_setting_once_with_the_metrics_it_produced():
    bleu = ("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 (5 items); "
            "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0 (2 items)")
    rouge = "nrefs:1|tok:default|stem:porter|split:no|multi:max|agg:mean|version:0.1.2"
    bert = "sentence-transformers/all-MiniLM-L6-v2_L6_no-idf_version=0.3.12(hug_trans=5.23.0) (layer 6: the encoder's last)"
    metrics = {**_metrics(), "signatures": {"bleu": bleu, "rouge1": rouge, "rougeL": rouge, "bertscore_f1": bert,
                                            "heldout_rougeL": rouge, "heldout_bertscore_f1": XSS}}  # fmt: skip
    page = render_report(metrics, CURVES, EXAMPLES, META)
    _check_renders(page)
    section = page[page.index("<h2>Metric signatures</h2>"):page.index("<h2>Gate checks</h2>")]
    assert section.count("<tr>") == 1 + 4  # the head, then one row per distinct signature
    assert '<td class="k">rouge1, rougeL, heldout_rougeL</td>' in section and rouge in section
    assert "tok:13a|smooth:exp|version:2.6.0 (5 items)<br>nrefs:1|case:mixed|eff:no|tok:zh" in section  # one line per tokenizer
    assert bert.replace("'", "&#x27;") in section and "&lt;script&gt;" in section and "pwned\")</" not in section
    assert "Metric signatures" not in render_report(_metrics(), CURVES, EXAMPLES, META)  # an older metrics.json has none


def test_long_outputs_collapse_and_short_ones_do_not():
    page = render_report(_metrics(), CURVES, EXAMPLES, META)
    assert page.count("<details>") == 1  # only the long candidate answer of support-7
    assert '<summary><span class="pv">&lt;script&gt;' in page and "(716 characters)" in page


def test_no_production_model_and_no_curves():
    metrics = _metrics(production=False)
    examples = [{**e, "production": None} for e in EXAMPLES]
    page = render_report(metrics, {"train_loss": [], "eval_loss": []}, examples, META)
    _check_renders(page)
    assert "production" not in page.split("<h2>Metrics</h2>")[1].split("</table>")[0]
    assert "<th>production</th>" not in page and "<h2>Candidate vs base</h2>" in page
    assert "No production model" in page and "No training curve recorded" in page
    assert page.count("<svg") == len(metric_groups(metrics))
    page = render_report(metrics, {}, [], {})
    _check_renders(page)
    assert "No per-example outputs" in page


def test_a_single_point_curve_still_has_axes():
    page = render_report(_metrics(), {"eval_loss": [[5, 2.0]]}, [], META)
    _check_renders(page)
    assert page.count("<svg") == len(metric_groups(_metrics())) + 1 and "<circle" in page


def test_ticks_are_round_and_cover_the_range():
    assert ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(1.93, 3.0) == [1.8, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0]
    flat = ticks(7, 7)
    assert flat[0] <= 7 <= flat[-1] and len(flat) > 1


def test_plots_data_rows():
    data = plots_data(_metrics(), {"train_loss": [[2, 1.5], [1, 2.0], [3, math.nan]], "eval_loss": []})
    assert data["eval_loss.json"] == []  # always written: DVC reports a missing plots file as an error
    assert data["train_loss.json"] == [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.5}]
    rows = data["metrics_by_model.json"]
    assert rows[:3] == [
        {"metric": "test_perplexity", "model": "candidate", "value": 8.2, "label": "test_perplexity · candidate"},
        {"metric": "test_perplexity", "model": "base", "value": 12.5, "label": "test_perplexity · base"},
        {"metric": "test_perplexity", "model": "production", "value": 9.0, "label": "test_perplexity · production"},
    ]
    assert {"metric": "bleu", "model": "base", "value": 0.25, "label": "bleu · base"} in rows
    assert not any(r["metric"] == "custom_score" and r["model"] == "base" for r in rows)  # NaN left out
    assert len(rows) == 8 + 6 + 4  # candidate all, base all but NaN, production four
    no_prod = plots_data(_metrics(production=False), {})
    assert {r["model"] for r in no_prod["metrics_by_model.json"]} == {"candidate", "base"}
    assert no_prod["train_loss.json"] == no_prod["eval_loss.json"] == []


def test_numpy_numbers_and_text_thresholds():
    np = pytest.importorskip("numpy")
    metrics = _metrics()
    metrics["candidate"]["safety_hits"] = np.int64(3)
    metrics["gate"]["checks"].append({"name": "judge", "metric": "judge_overall", "value": np.float32(4.1),
                                      "threshold": "<b>n/a</b>", "passed": False, "reason": "judge skipped"})
    data = plots_data(metrics, {"train_loss": [[np.int64(1), np.float64(2.5)]]})
    json.dumps(data)  # plain Python numbers only
    assert data["train_loss.json"] == [{"step": 1, "train_loss": 2.5}]
    assert {"metric": "safety_hits", "model": "candidate", "value": 3.0, "label": "safety_hits · candidate"} in (
        data["metrics_by_model.json"])
    page = render_report(metrics, CURVES, EXAMPLES, META)
    _check_renders(page)
    assert '<td class="n worse">+3 (+300.0%)</td>' not in page  # base 1 -> +2 hits, worse
    assert '<td class="n worse">+2 (+200.0%)</td>' in page and "&lt;b&gt;n/a&lt;/b&gt;" in page


DVC_PLOTS = """
plots:
  - models/evaluate/plots/metrics_by_model.json:
      template: bar_horizontal
      x: value
      y: label
      title: Candidate vs base vs production
  - Training curves:
      template: linear
      x: step
      y:
        models/evaluate/plots/train_loss.json: train_loss
        models/evaluate/plots/eval_loss.json: eval_loss
"""


def _dvc_plots(root: Path, metrics: dict, curves: dict, capsys) -> dict:
    """Write the plots files and the proposed dvc.yaml entries; what the real `dvc plots show` draws.

    dvc runs in a subprocess: in-process, loggers other tests configured write into its JSON output.
    """
    import subprocess
    import sys

    def dvc(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)

    plots = root / "models/evaluate/plots"
    plots.mkdir(parents=True, exist_ok=True)
    for name, rows in plots_data(metrics, curves).items():
        (plots / name).write_text(json.dumps(rows))
    (root / "dvc.yaml").write_text(DVC_PLOTS)
    if not (root / ".dvc").is_dir():
        assert dvc(["init", "--no-scm", "-q"]).returncode == 0
    done = dvc(["plots", "show", "--json"])
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert not shown.get("errors"), shown.get("errors")
    return {name: entry[0]["content"] for name, entry in shown["data"].items()}


@pytest.mark.integration
def test_dvc_draws_the_plots_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the dvc CLI, run in-process, works in the current folder
    specs = _dvc_plots(tmp_path, _metrics(), CURVES, capsys)
    bars = specs["models/evaluate/plots/metrics_by_model.json"]["data"]["values"]
    assert len({d["label"] for d in bars}) == len(bars) == 18  # one bar per (metric, model): none stack
    curve = specs["Training curves"]["data"]["values"]
    series = [d["filename::field"] for d in curve]  # two files of different lengths, one line each
    assert series.count("eval_loss.json::eval_loss") == 2
    assert series.count("train_loss.json::train_loss") == 20
    specs = _dvc_plots(tmp_path, _metrics(production=False), {"train_loss": [[1, 2.0]]}, capsys)  # no eval curve: no error
    assert len(specs["Training curves"]["data"]["values"]) == 1
