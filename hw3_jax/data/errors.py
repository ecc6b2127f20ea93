"""The one error type of the data room, and the one line it quotes of another error."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data or data options, in one line that names the fix."""


def first_line(e: BaseException) -> str:
    """"TypeName: the first line of its message" (at most 200 characters), for a DataError."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__
