"""Check a report.html the way a reader sees it: rendered by headless Chromium, measured in the page, screenshotted.

    python scripts/check_report.py RUN/report/report.html [--shots DIR] [--width 1200]

Fails (exit 1, one line per problem) on: content wider than the window (horizontal overflow, at --width and at a
narrow 800 px window), an image shown below a readable size (rendered height under --min-height px, or scaled below
--min-scale of its natural width, which shrinks its text the same), Python reprs in the text ({'...': or ['...',
or any brace outside code), literal backticks (Markdown that was not rendered) and absolute paths of the
machine that ran it (/root/..., /home/..., /tmp/...). Exit 2 when no Chromium is on
PATH (`apt-get install -y chromium`). With --shots, writes DIR/top.png (the first screen, where the verdict is),
DIR/figure-N.png (each figure as shown on the page) and with --full-page DIR/page.png (the whole page at half size).

The page is measured by a script added to a copy of the HTML (the report itself is not changed) whose result
Chromium's --dump-dom prints.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MARK = "yfpo-check-result"
MEASURE = (
    """<script>window.addEventListener('load', () => {
  const doc = document.documentElement, out = {width: window.innerWidth, scrollWidth: doc.scrollWidth,
    height: doc.scrollHeight, images: [], figures: []};
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    out.images.push({alt: img.alt, shown_w: r.width, shown_h: r.height, natural_w: img.naturalWidth,
      natural_h: img.naturalHeight});
  }
  for (const f of document.querySelectorAll('figure')) {
    const r = f.getBoundingClientRect();
    out.figures.push({top: r.top + window.scrollY, bottom: r.bottom + window.scrollY});
  }
  const body = document.body.cloneNode(true);
  body.querySelectorAll('pre, code, script').forEach(e => e.remove());
  out.text = body.textContent;
  const pre = document.createElement('pre'); pre.id = '"""
    + MARK
    + """';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""
)
ABSOLUTE = re.compile(r"(?<![\w.])/(?:root|home|tmp|Users|work|mnt)/\S*")
REPR = re.compile(r"""[{\[(]\s*['"][^'"]*['"]\s*[:,\]})]|[{}]""")


def browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def _chromium(exe: str, args: list[str], timeout: int = 300) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    try:
        r = subprocess.run(cmd + args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"check_report: Chromium took over {timeout} s ({' '.join(args)})") from None
    return r.stdout


def measure(exe: str, page: Path, width: int) -> dict:
    """Render `page` in a window `width` px wide and return what the injected script measured."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.html"
        html = page.read_text()
        probe.write_text(html.replace("</body>", MEASURE + "</body>") if "</body>" in html else html + MEASURE)
        dom = _chromium(exe, [f"--window-size={width},900", "--dump-dom", probe.as_uri()])
    m = re.search(rf'<pre id="{MARK}">(.*?)</pre>', dom, re.S)
    if not m:
        raise RuntimeError(f"check_report: Chromium rendered no measurement of {page} (is it an HTML page?)")
    raw = m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&")
    return json.loads(raw)


def problems(m: dict, min_height: int, min_scale: float, where: str = "") -> list[str]:
    """What a reader would trip over, one line each (empty: the page passes)."""
    out = []
    if m["scrollWidth"] > m["width"] + 1:
        out.append(f"{where}horizontal overflow: the page is {m['scrollWidth']} px wide in a {m['width']} px window")
    for i, im in enumerate(m["images"], 1):
        scale = im["shown_w"] / im["natural_w"] if im["natural_w"] else 0.0
        if im["shown_h"] < min_height or scale < min_scale:
            out.append(
                f"{where}image {i} ({im['alt'][:50]}) shown at {im['shown_w']:.0f} x {im['shown_h']:.0f} px "
                f"({scale:.0%} of its {im['natural_w']} x {im['natural_h']}): below {min_height} px high or "
                f"{min_scale:.0%} scale"
            )
    text = m["text"]
    for hit in list(REPR.finditer(text))[:5]:
        ctx = text[max(0, hit.start() - 30) : hit.end() + 30].replace("\n", " ")
        out.append(f"{where}Python repr or brace in the text: ...{ctx}...")
    if hit := ABSOLUTE.search(text):
        out.append(f"{where}an absolute path of the machine that ran it: {hit.group(0)}")
    if "`" in text:
        i = text.index("`")
        ctx = text[max(0, i - 30) : i + 30].replace("\n", " ")
        out.append(f"{where}literal backtick (unrendered Markdown): ...{ctx}...")
    return out


def screenshots(exe: str, page: Path, m: dict, width: int, out: Path, full_page: bool = False) -> list[Path]:
    """top.png (the first screen), figure-N.png (each figure as the page shows it), with full_page page.png (the
    whole page at half size)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    height = int(m["height"]) + 20
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.png"
        _chromium(exe, [f"--window-size={width},{height}", f"--screenshot={full}", page.as_uri()])
        if not full.exists() or full.stat().st_size == 0:
            raise RuntimeError(f"check_report: Chromium wrote no screenshot of {page}")
        img = Image.open(full).convert("RGB")
    written = [out / "top.png"]
    img.crop((0, 0, width, min(img.height, 1100))).save(written[0], optimize=True)
    for i, f in enumerate(m["figures"], 1):
        box = (0, max(0, int(f["top"]) - 10), width, min(img.height, int(f["bottom"]) + 10))
        p = out / f"figure-{i}.png"
        img.crop(box).save(p, optimize=True)
        written.append(p)
    if full_page:
        half = img.resize((width // 2, img.height // 2), Image.LANCZOS)
        half.save(out / "page.png", optimize=True)
        written.append(out / "page.png")
    return written


def check(
    page: Path,
    width: int = 1200,
    narrow: int = 800,
    min_height: int = 200,
    min_scale: float = 0.6,
    shots=None,
    full_page: bool = False,
) -> list[str]:
    exe = browser()
    if exe is None:
        raise FileNotFoundError("check_report: no chromium on PATH (apt-get install -y chromium)")
    page = page.resolve()
    m = measure(exe, page, width)
    found = problems(m, min_height, min_scale)
    found += [p for p in problems(measure(exe, page, narrow), 0, 0.0, f"at {narrow} px: ") if "overflow" in p]
    if shots:
        screenshots(exe, page, m, width, Path(shots), full_page)
    return found


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page", type=Path, help="a report.html")
    ap.add_argument("--shots", type=Path, help="folder for the screenshots")
    ap.add_argument("--full-page", action="store_true", help="also DIR/page.png: the whole page at half size")
    ap.add_argument("--width", type=int, default=1200, help="window width in px (default 1200)")
    ap.add_argument("--narrow", type=int, default=800, help="a narrower window checked for overflow (default 800)")
    ap.add_argument("--min-height", type=int, default=200, help="smallest readable image height in px (default 200)")
    ap.add_argument("--min-scale", type=float, default=0.6, help="smallest shown/natural width of an image (0.6)")
    args = ap.parse_args(argv)
    if not args.page.is_file():
        print(f"check_report: {args.page} does not exist", file=sys.stderr)
        return 2
    try:
        found = check(args.page, args.width, args.narrow, args.min_height, args.min_scale, args.shots, args.full_page)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    for p in found:
        print(f"check_report: {args.page}: {p}")
    if not found:
        print(f"check_report: {args.page}: ok" + (f" (screenshots in {args.shots})" if args.shots else ""))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
