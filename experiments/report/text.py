"""Text helpers of the report: templates, filling, re-wrapping and number formats.

A template is a Markdown file of docs/templates/ with `<<name>>` placeholders (LaTeX's braces
in the answers' math rule out `{name}`). Numbers change line lengths, so after filling the
paragraphs and list items are re-wrapped.
"""

from __future__ import annotations

import pathlib
import re
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

TEMPLATES = pathlib.Path(__file__).resolve().parents[2] / "docs" / "templates"

_PLACEHOLDER = re.compile(r"<<([a-z_][a-z0-9_]*)>>")
_LINE_PLACEHOLDER = re.compile(r"^<<([a-z_][a-z0-9_]*)>>\n", re.MULTILINE)
# Blocks left exactly as written: tables, headings, display math, HTML comments, code.
_VERBATIM = ("|", "#", "$$", "<!--", "```", "<img")
_ITEM = re.compile(r"(- |\d+\. )")
# Inline math and code spans are never broken across lines.
_ATOMS = re.compile(r"\$[^$]+\$|`[^`]+`")


def template(name: str) -> dict[str, str]:
    """The pieces of docs/templates/NAME (e.g. 'q1.md'): the body under '' and each
    `<!-- section KEY -->` piece under KEY (the alternatives a value function chooses from,
    such as the paragraph for a result not measured yet), each without its outer newlines."""
    text = (TEMPLATES / name).read_text()
    parts = re.split(r"^<!-- section ([a-z0-9_]+) -->\n", text, flags=re.MULTILINE)
    pieces = {"": parts[0]}
    pieces.update(zip(parts[1::2], parts[2::2], strict=True))
    return {key: piece.strip("\n") for key, piece in pieces.items()}


def fill(text: str, values: Mapping[str, Any], name: str = "template") -> str:
    """`text` with every `<<key>>` replaced by `str(values[key])`, in one pass; a line that is
    only a placeholder whose value is empty disappears (an optional table row, say).

    Raises KeyError naming the first placeholder without a value (a template/values
    mismatch)."""
    def value(m: re.Match) -> str:
        if m.group(1) not in values:
            raise KeyError(f"unfilled placeholder in the {name}: <<{m.group(1)}>>")
        return str(values[m.group(1)])

    def line(m: re.Match) -> str:
        filled = value(m)
        return filled + "\n" if filled else ""

    text = _LINE_PLACEHOLDER.sub(line, text)
    return _PLACEHOLDER.sub(value, text)


def reflow(text: str, width: int = 92) -> str:
    """Re-wrap the paragraphs and list items (`- `, `1. `) of Markdown `text` to `width`.

    Blocks (separated by blank lines) that start with a table row, heading, HTML comment or
    code fence stay as they are; a `$$` display block is joined into one line (so templates
    can wrap it). Inline `$math$` and `code` are kept whole."""
    blocks = []
    for block in re.split(r"\n[ \t]*\n", text.strip("\n")):
        block = block.strip("\n")
        if not block.strip():
            continue
        if block.startswith("$$"):  # display math: one line, however the template wraps it
            blocks.append(" ".join(line.strip() for line in block.split("\n")))
            continue
        if block.lstrip().startswith(_VERBATIM):
            blocks.append(block)
            continue
        items: list[list[str]] = []
        for line in block.split("\n"):
            if _ITEM.match(line) or not items:
                items.append([line.strip()])
            else:
                items[-1].append(line.strip())
        blocks.append("\n".join(_wrap(" ".join(item), width) for item in items))
    return "\n\n".join(blocks) + "\n"


def _wrap(joined: str, width: int) -> str:
    m = _ITEM.match(joined)
    indent = " " * len(m.group(1)) if m else ""
    protected = _ATOMS.sub(lambda a: a.group(0).replace(" ", "\0"), joined)
    wrapped = textwrap.fill(protected, width=width, subsequent_indent=indent,
                            break_long_words=False, break_on_hyphens=False)
    return wrapped.replace("\0", " ")


def row(cells: Iterable[Any]) -> str:
    """One Markdown table row: ['a', 1] -> '| a | 1 |'."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def pct(x: float | None, digits: int = 1) -> str:
    """0.9087 -> '90.9%'; None -> 'n/a'."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def tex_int(n: int) -> str:
    """An integer for inside $...$: 32768 -> '32{,}768' (a bare comma gets a space in TeX)."""
    return f"{n:,}".replace(",", "{,}")


def and_list(items: Iterable[Any]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    items = [str(i) for i in items]
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def num(x: float) -> str:
    """A float as the shortest plain number: 0.0 -> '0', -1.0 -> '-1', 0.5 -> '0.5'."""
    return f"{x:g}"


def sci(x: float) -> str:
    """4.13e-4 -> '4.1\\times 10^{-4}' (LaTeX); plain between 0.01 and 100."""
    if x == 0:
        return "0"
    if 0.01 <= abs(x) < 100:
        return f"{x:.3g}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}\\times 10^{{{int(exp)}}}"


def ms(x: float) -> str:
    """Milliseconds: 3 decimals below 10 ms, 1 above: 0.1234 -> '0.123 ms'."""
    return f"{x:.3f} ms" if x < 10 else f"{x:.1f} ms"
