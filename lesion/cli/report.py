"""`lesion report RUN_DIR`: one self-contained HTML page and a markdown summary of a run."""
from __future__ import annotations

from .common import add_common_flags, console
from .tables import shown, styled


def register(sub) -> None:
    p = sub.add_parser("report", help="HTML + markdown report of a run folder")
    p.add_argument("run_dir", help="folder written by lesion scan (and compare/analyze/eval)")
    p.add_argument("--check", action="store_true",
                   help="open the page in headless Chromium; exit 1 if a figure does not render")
    p.add_argument("--screenshot", default=None, metavar="PNG",
                   help="save a full-page screenshot taken in headless Chromium (implies --check)")
    add_common_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..report import build_report
    from ..report.render import check_run_folder
    from .common import check_out
    from ..results.filenames import REPORT_HTML, REPORT_MD
    check_run_folder(args.run_dir)
    for name in (REPORT_HTML, REPORT_MD):  # before any rendering
        check_out(Path(args.run_dir) / name, "run_dir", named=False)
    check_out(args.screenshot, "screenshot")
    html_path, md_path = build_report(args.run_dir)
    console.print(f"wrote {shown(html_path)} and {shown(md_path)}")
    if not (args.check or args.screenshot):
        return 0
    from ..report.browser import check_render
    check = check_render(html_path, args.screenshot)
    if args.screenshot:
        console.print(f"wrote {shown(args.screenshot)} ({check.height} px tall)")
    if not check.ok:
        console.print(styled(("report does not render", "bold red"), f": {len(check.broken)} of {check.images} "
                             f"figures broken ({', '.join(check.broken)}), {check.sections} sections"))
        return 1
    console.print(f"renders in headless Chromium: {check.images} figures, {check.sections} sections, none broken")
    return 0

