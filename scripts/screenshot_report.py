"""Render a learnlab report in headless Chromium and save screenshots, to look at it as a reader would.

    .venv/bin/python scripts/screenshot_report.py runs/report.html --out runs/report-screens

Writes ``first-screen.png`` (a 1366x768 laptop window: what a reader sees first) and
``full-page.png`` (the whole page at the same width, cut at 16000 pixels). Needs the Debian
package ``chromium`` (``apt-get install chromium``); missing: one line, exit 2.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT, LONGEST = 1366, 768, 16000


def chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit(f"error: no headless browser found ({', '.join(BROWSERS)}); apt-get install chromium")


def screenshot(browser: str, page: Path, out: Path, height: int) -> None:
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={WIDTH},{height}", f"--screenshot={out}", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)


def page_height(browser: str, page: Path) -> int:
    """The rendered document's height, read from Chromium's DOM dump (a script writes it into the title)."""
    probe = page.with_name(f".{page.stem}.height.html")
    probe.write_text(page.read_text(encoding="utf-8").replace(
        "</body>", "<script>document.title='H'+document.documentElement.scrollHeight</script></body>"), encoding="utf-8")
    try:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},{HEIGHT}",
                              "--dump-dom", probe.resolve().as_uri()], check=True, capture_output=True, text=True,
                             timeout=120).stdout
    finally:
        probe.unlink()
    start = dom.find("<title>H")
    return int(dom[start + 8:dom.find("</title>", start)]) if start >= 0 else HEIGHT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: next to the report)")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} does not exist", file=sys.stderr)
        return 2
    browser = chromium()
    out = args.out or args.report.parent / "report-screens"
    out.mkdir(parents=True, exist_ok=True)
    screenshot(browser, args.report, out / "first-screen.png", HEIGHT)
    height = min(LONGEST, page_height(browser, args.report))
    screenshot(browser, args.report, out / "full-page.png", height)
    print(f"{out / 'first-screen.png'} ({WIDTH}x{HEIGHT}) and {out / 'full-page.png'} ({WIDTH}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
