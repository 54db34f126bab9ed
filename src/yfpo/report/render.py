"""A report as a list of blocks (heading, paragraph, list, table, preformatted text, image, a block folded behind
a `<details>`), rendered to Markdown (images as files beside it) and to one self-contained HTML page (images
inlined). Text is Markdown (`code`, **bold**, links): the HTML renders it with markdown-it-py (CommonMark +
tables), so what a reader sees in the browser is formatted, never literal backticks."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
    "line-height:1.45}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}td[style*=right]{font-variant-numeric:tabular-nums}"
    ".wide{overflow-x:auto;max-width:100%}code{background:#f3f3f3;padding:0 .2em;border-radius:3px;font-size:90%}"
    "pre{background:#f7f7f7;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}"
    "img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:13px;color:#555}li{margin:.25em 0}"
    "details{margin:.8em 0}summary{cursor:pointer;color:#333}"
)

_MD = MarkdownIt("commonmark", {"html": False}).enable("table")  # text's "<number>" is text, not a tag
_TAG = re.compile(r"<(?=[A-Za-z/!?])")


def _text(s: str) -> str:
    """Markdown text whose '<' never opens an HTML tag (a protocol's "The answer is <number>." must show)."""
    parts = re.split(r"(`[^`]*`)", s)  # code spans show their text as it is: left alone
    return "".join(p if i % 2 else _TAG.sub("&lt;", p) for i, p in enumerate(parts))


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def signed(x: float) -> str:
    """A difference of fractions in accuracy points with its sign, never '-0.0'."""
    v = round(100 * x, 1)
    return f"{v + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0


def _is_num(s: str) -> bool:
    s = s.strip().replace("%", "").replace("+", "").replace("−", "-")
    if not s or s in ("—", "-"):
        return False
    try:
        float(s.split()[0])
        return True
    except ValueError:
        return False


def _cell(s: str) -> str:
    """A table cell's text, safe inside a Markdown table row."""
    return _text(str(s)).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; columns whose cells all start with a number are right-aligned."""
    cols = len(header)
    align = []
    for j in range(cols):
        vals = [r[j] for r in rows if j < len(r) and r[j] not in ("", "—", "-")]
        align.append(" ---: " if vals and all(_is_num(v) for v in vals) else " --- ")
    return (
        "| "
        + " | ".join(_cell(h) for h in header)
        + " |\n|"
        + "|".join(align)
        + "|\n"
        + "\n".join("| " + " | ".join(_cell(c) for c in r) + " |" for r in rows)
    )


class Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, [[str(c) for c in r] for r in rows]))

    def img(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", Path(path), alt))

    def details(self, summary: str, build) -> None:
        """Blocks folded behind a `<details>` whose `<summary>` is `summary`: `build(doc)` adds them to a Doc."""
        inner = Doc()
        build(inner)
        self.blocks.append(("details", summary, inner.blocks))

    # ------------------------------------------------------------------ Markdown

    def markdown(self, base: Path) -> str:
        return "\n\n".join(self._md_block(b, base) for b in self.blocks) + "\n"

    @classmethod
    def _md_block(cls, b: tuple, base: Path) -> str:
        kind = b[0]
        if kind == "h":
            return "#" * b[1] + " " + b[2]
        if kind == "p":
            return _text(b[1])
        if kind == "ul":
            return "\n".join(f"- {_text(x)}" for x in b[1])
        if kind == "pre":
            return "```\n" + b[1].rstrip() + "\n```"
        if kind == "table":
            return md_table(b[1], b[2])
        if kind == "details":
            inner = "\n\n".join(cls._md_block(x, base) for x in b[2])
            return f"<details><summary>{html.escape(b[1], quote=False)}</summary>\n\n{inner}\n\n</details>"
        return f"![{b[2]}]({_relative(b[1], base)})"

    # ------------------------------------------------------------------ HTML

    def html(self, title: str) -> str:
        body = "".join(self._html_block(b) for b in self.blocks)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n"
        )

    @classmethod
    def _html_block(cls, b: tuple) -> str:
        kind = b[0]
        if kind == "img":
            data = base64.b64encode(b[1].read_bytes()).decode()
            alt = html.escape(b[2])
            return (
                f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"/><figcaption>{alt}</figcaption></figure>'
            )
        if kind == "details":
            inner = "".join(cls._html_block(x) for x in b[2])
            return f"<details><summary>{html.escape(b[1])}</summary>{inner}</details>"
        out = _MD.render(cls._md_block(b, Path(".")))
        return re.sub(r"<table>(.*?)</table>", r"<div class='wide'><table>\1</table></div>", out, flags=re.S)


def _relative(path: Path, base: Path) -> Path:
    """An image path relative to the report folder, so the folder can be copied anywhere."""
    try:
        return path.resolve().relative_to(base.resolve())
    except ValueError:
        return path
