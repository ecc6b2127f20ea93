"""Text helpers of the report: templates, filling, re-wrapping and number formats.

A template is a Markdown file of templates/ rendered by Jinja2 with angle-bracket
delimiters (LaTeX's braces in the answers' math rule out Jinja's `{{ }}`):

- `<< cnn.params >>` is a value (a results JSON's entry, say) and `<< x|fmt(',') >>` one
  formatted with a Python format spec (`,`, `.3f`, `.1%`); the filters `tex`, `sci` and `ms`
  are the formats below;
- `<% if x %>A<% else %>B<% endif %>` (and `<% for %>`) keep the wording that depends on a
  measurement in the template; `<# ... #>` is a comment;
- a value or attribute that is missing is an error (StrictUndefined), also inside `if`;
- a line holding only block tags disappears, and the newline right after any `%>` is dropped
  (trim_blocks), so a tag that ends a line of prose must not stand between two words.

Numbers change line lengths, so after filling the paragraphs and list items are re-wrapped.
"""

from __future__ import annotations

import pathlib
import re
import textwrap
from collections.abc import Iterable, Mapping
from typing import Any

import jinja2

from experiments import cli

TEMPLATES = pathlib.Path(__file__).parent / "templates"  # package data, installed with the code

# Blocks left exactly as written: tables, headings, display math, HTML comments, code.
_VERBATIM = ("|", "#", "$$", "<!--", "```", "<img")
_ITEM = re.compile(r"(- |\d+\. )")
# Inline math and code spans are never broken across lines.
_ATOMS = re.compile(r"\$[^$]+\$|`[^`]+`")


def read_json(path: pathlib.Path) -> Any:
    """The JSON object in `path`, or None when there is no such file (not measured yet)."""
    return cli.read_json(path) if path.is_file() else None


def fill(name: str, values: Mapping[str, Any]) -> str:
    """templates/NAME filled with `values`.

    Raises jinja2.UndefinedError naming a value the template needs and `values` lacks, or
    jinja2.TemplateSyntaxError (both jinja2.TemplateError)."""
    return ENV.get_template(name).render(values)


def render(name: str, values: Mapping[str, Any] | None, width: int = 92) -> str:
    """The body of templates/NAME filled with `values` and re-wrapped; `measured` is
    true there unless `values` is None (no results yet)."""
    values = {"measured": False} if values is None else {"measured": True, **values}
    return reflow(fill(name, values), width)


def reflow(text: str, width: int = 92) -> str:
    """Re-wrap the paragraphs and list items (`- `, `1. `) of Markdown `text` to `width`.

    Blocks (separated by blank lines) that start with a table row, heading, HTML comment or
    code fence stay as they are; a `$$` display block is joined into one line (so templates
    can wrap it). Inline `$math$` and `code` are kept whole; runs of spaces (left by a
    conditional that was dropped, say) become one."""
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
        blocks.append("\n".join(_wrap(" ".join(" ".join(item).split()), width)
                                 for item in items))
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


def and_list(items: Iterable[Any], last: str = "and") -> str:
    """['a', 'b', 'c'] -> 'a, b and c' (`last`: the word before the last item)."""
    items = [str(i) for i in items]
    if not items:
        return ""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


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


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
    variable_start_string="<<", variable_end_string=">>", block_start_string="<%",
    block_end_string="%>", comment_start_string="<#", comment_end_string="#>",
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
ENV.filters.update(fmt=format, tex=tex_int, sci=sci, ms=ms)
