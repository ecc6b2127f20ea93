"""Small text helpers for the generated sections of docs/answers.md (see experiments.report).

The sections are templates with `<<name>>` placeholders filled from results JSON; numbers
change line lengths, so paragraphs and list items are re-wrapped after filling.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from typing import Any

# Blocks left exactly as written: tables, headings, display math, HTML comments, code.
_VERBATIM = ("|", "#", "$$", "<!--", "```", "<img")
_ITEM = re.compile(r"(- |\d+\. )")
# Inline math and code spans are never broken across lines.
_ATOMS = re.compile(r"\$[^$]+\$|`[^`]+`")


def fill(template: str, values: Mapping[str, Any], name: str = "template") -> str:
    """`template` with every `<<key>>` replaced by `str(values[key])`.

    Raises KeyError naming the first placeholder left unfilled (a template/values mismatch)."""
    text = template
    for key, val in values.items():
        text = text.replace(f"<<{key}>>", str(val))
    if "<<" in text:
        raise KeyError(f"unfilled placeholder in the {name}: {text[text.index('<<'):][:40]}")
    return text


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
        out = []
        for item in items:
            joined = " ".join(item)
            m = _ITEM.match(joined)
            indent = " " * len(m.group(1)) if m else ""
            protected = _ATOMS.sub(lambda a: a.group(0).replace(" ", "\0"), joined)
            wrapped = textwrap.fill(protected, width=width, subsequent_indent=indent,
                                    break_long_words=False, break_on_hyphens=False)
            out.append(wrapped.replace("\0", " "))
        blocks.append("\n".join(out))
    return "\n\n".join(blocks) + "\n"


def pct(x: float | None, digits: int = 1) -> str:
    """0.9087 -> '90.9%'; None -> 'n/a'."""
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def tex_int(n: int) -> str:
    """An integer for inside $...$: 32768 -> '32{,}768' (a bare comma gets a space in TeX)."""
    return f"{n:,}".replace(",", "{,}")


def and_list(items: list[Any]) -> str:
    """['a', 'b', 'c'] -> 'a, b and c'."""
    items = [str(i) for i in items]
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
