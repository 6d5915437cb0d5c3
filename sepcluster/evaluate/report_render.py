"""The report as Markdown and HTML at once: headings, paragraphs, tables and linked figures.

:class:`Doc` appends each element to both documents. Numbers are shown with 2 decimals
(p-values in scientific notation), NaN as an empty cell, booleans as yes/no. Every figure is an
``<img>`` inside an ``<a href>`` to the PNG beside the report (and ``![alt](file)`` in Markdown).
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
         "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
         "th{background:#e8eef6}tr:nth-child(even) td{background:#f6f6f6}"
         "td:first-child,th:first-child,td:nth-child(2),th:nth-child(2),td.t{text-align:left}"
         "figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}"
         "p.note{color:#555;font-size:13px}")


def fmt(v, column: str = "") -> str:
    """One cell as text."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return ""
    if column.startswith("p_"):
        return f"{f:.2e}"
    return f"{f:.2f}"


def md_table(df: pd.DataFrame, headers: dict | None = None) -> str:
    """A Markdown table (``headers`` renames columns as shown)."""
    cols = [str((headers or {}).get(c, c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(fmt(v, str(c)) for v, c in zip(row, df.columns)) + " |")
    return "\n".join(lines)


def html_table(df: pd.DataFrame, bold: set[str] = frozenset(), headers: dict | None = None) -> str:
    """An HTML table; rows whose first cell is in ``bold`` are bold."""
    head = "".join(f"<th>{html.escape(str((headers or {}).get(c, c)))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = [(html.escape(fmt(v, str(c))), isinstance(v, str)) for v, c in zip(row, df.columns)]
        strong = str(row[0]).replace("**", "") in bold
        tds = "".join(('<td class="t">' if text else "<td>") + (f"<b>{c}</b>" if strong else c) + "</td>"
                      for c, text in cells)
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Doc:
    """The report being written, as Markdown and HTML lines."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.md: list[str] = [f"# {title}", ""]
        self.html: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        self.figures: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md += [f"{'#' * level} {text}", ""]
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, *lines: str, note: bool = False) -> None:
        self.md += [("  \n".join(lines)), ""]
        cls = ' class="note"' if note else ""
        self.html.append(f"<p{cls}>" + "<br>".join(html.escape(x) for x in lines) + "</p>")

    def table(self, df: pd.DataFrame, bold: set[str] = frozenset(), headers: dict | None = None) -> None:
        shown = df.copy()
        if bold and len(shown):
            shown.iloc[:, 0] = [f"**{m}**" if m in bold else m for m in shown.iloc[:, 0]]
        self.md += [md_table(shown, headers), ""]
        self.html.append(html_table(df, bold=set(bold), headers=headers))

    def figure(self, name: str, alt: str, caption: str) -> None:
        """A PNG beside the report, linked."""
        self.figures.append(name)
        self.md += [f"[![{alt}]({name})]({name})", "", f"*{caption}*", ""]
        self.html.append(f'<figure><a href="{html.escape(name)}"><img src="{html.escape(name)}" '
                         f'alt="{html.escape(alt)}"></a><figcaption>{html.escape(caption)}</figcaption></figure>')

    def render(self) -> tuple[str, str]:
        """``(markdown, html)``."""
        page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(self.title)
                + f"</title><style>{STYLE}</style></head><body>" + "\n".join(self.html) + "</body></html>")
        return "\n".join(self.md), page
