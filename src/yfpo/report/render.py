"""A report as a list of blocks (heading, paragraph, list, table, preformatted text, image), rendered to
Markdown (images as files beside it) and to one self-contained HTML page (images inlined)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
    "line-height:1.45}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}td.num{text-align:right;"
    "font-variant-numeric:tabular-nums}.wide{overflow-x:auto;max-width:100%}"
    "pre{background:#f7f7f7;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}"
    "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:12px;color:#666}li{margin:.25em 0}"
)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _is_num(s: str) -> bool:
    try:
        float(s.replace("%", "").replace("+", ""))
        return True
    except ValueError:
        return False


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

    # ------------------------------------------------------------------ Markdown

    def markdown(self, base: Path) -> str:
        return "\n\n".join(self._md_block(b, base) for b in self.blocks) + "\n"

    @staticmethod
    def _md_block(b: tuple, base: Path) -> str:
        kind = b[0]
        if kind == "h":
            return "#" * b[1] + " " + b[2]
        if kind == "p":
            return b[1]
        if kind == "ul":
            return "\n".join(f"- {x}" for x in b[1])
        if kind == "pre":
            return "```\n" + b[1].rstrip() + "\n```"
        if kind == "table":
            return (
                "| "
                + " | ".join(b[1])
                + " |\n|"
                + "|".join(" --- " for _ in b[1])
                + "|\n"
                + "\n".join("| " + " | ".join(r) + " |" for r in b[2])
            )
        try:  # img: a path relative to the report folder, so the folder can be copied anywhere
            rel = b[1].resolve().relative_to(base.resolve())
        except ValueError:
            rel = b[1]
        return f"![{b[2]}]({rel})"

    # ------------------------------------------------------------------ HTML

    def html(self, title: str) -> str:
        body = "".join(self._html_block(b) for b in self.blocks)
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}</body></html>\n"
        )

    @staticmethod
    def _html_block(b: tuple) -> str:
        e = html.escape
        kind = b[0]
        if kind == "h":
            return f"<h{b[1]}>{e(b[2])}</h{b[1]}>"
        if kind == "p":
            return f"<p>{e(b[1])}</p>"
        if kind == "ul":
            return "<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>"
        if kind == "pre":
            return f"<pre>{e(b[1])}</pre>"
        if kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join(
                "<tr>"
                + "".join(f"<td class='num'>{e(c)}</td>" if _is_num(c) else f"<td>{e(c)}</td>" for c in r)
                + "</tr>"
                for r in b[2]
            )
            return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        data = base64.b64encode(b[1].read_bytes()).decode()
        return (
            f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{e(b[2])}</figcaption></figure>"
        )
