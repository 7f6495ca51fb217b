"""Open a report in headless Chromium: does the page render, with every figure decoded?

A copy of the page gets a small probe script that, once the page has loaded, writes what
the browser saw (images, which of them failed to decode, sections, page height) into an
attribute of ``<body>``; ``--dump-dom`` prints the DOM after scripts ran, so the check
reads the browser's own verdict rather than guessing from the HTML. The report itself
stays free of scripts.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LesionError, MissingPackage

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# As root and on a closed network Chromium needs no sandbox and no background connections.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")
PROBE = ("<script>addEventListener('load',()=>{const i=[...document.images];"
         "document.body.setAttribute('data-render-check',JSON.stringify({images:i.length,"
         "broken:i.filter(x=>!x.complete||x.naturalWidth===0).map(x=>x.alt||x.src.slice(0,40)),"
         "sections:document.querySelectorAll('h2').length,"
         "height:document.documentElement.scrollHeight}))})</script>")


@dataclass(frozen=True)
class RenderCheck:
    images: int
    broken: tuple[str, ...]  # alt text of every image the browser could not decode or load
    sections: int
    height: int  # of the whole page, in CSS pixels at the check's window width

    @property
    def ok(self) -> bool:
        return not self.broken and self.sections > 0


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise MissingPackage("no headless Chromium found to open the report: apt-get install chromium "
                         "(or put chromium/google-chrome on PATH)")


def _run(args: list[str], profile: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([find_browser(), *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise LesionError("Chromium did not finish rendering the report within 120 s") from None


def check_render(page: str | Path, screenshot: str | Path | None = None, width: int = 1100) -> RenderCheck:
    """Render ``page`` headless; optionally save a full-page PNG of it to ``screenshot``."""
    page = Path(page)
    if not page.is_file():
        raise LesionError(f"{str(page)!r} not found: write it first with `lesion report RUN_DIR`")
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / page.name
        probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                          encoding="utf-8")
        dom = _run([f"--window-size={width},800", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                   str(Path(tmp) / "profile")).stdout
        found = re.search(r'data-render-check="([^"]*)"', dom)
        if found is None:
            raise LesionError("Chromium did not render the report (no page came back): run it by hand to "
                              f"see why: chromium --headless --dump-dom {page.resolve().as_uri()}")
        seen = json.loads(html.unescape(found.group(1)))
        check = RenderCheck(seen["images"], tuple(seen["broken"]), seen["sections"], seen["height"])
        if screenshot is not None:
            target = Path(screenshot).resolve()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)  # so that a stale file cannot pass for this screenshot
            _run([f"--window-size={width},{check.height}", f"--screenshot={target}", page.resolve().as_uri()],
                 str(Path(tmp) / "profile"))
            if not target.is_file():
                raise LesionError(f"Chromium wrote no screenshot to {target}: check that the folder is writable")
    return check
