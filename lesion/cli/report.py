"""`lesion report RUN_DIR`: one self-contained HTML page and a markdown summary of a run."""
from __future__ import annotations

from .common import console


def register(sub) -> None:
    p = sub.add_parser("report", help="HTML + markdown report of a run folder")
    p.add_argument("run_dir", help="folder written by lesion scan (and compare/analyze/eval)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..report import build_report
    html_path, md_path = build_report(args.run_dir)
    console.print(f"wrote {html_path} and {md_path}")
    return 0
