"""The one error type of the data room, the one line it quotes of another error, and the
one reading of a JSON object from a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A problem with the user's data or data options, in one line that names the fix."""


def first_line(e: BaseException) -> str:
    """"TypeName: the first line of its message" (at most 200 characters), for a DataError."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def json_object(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in the file `path`; anything else is one ValueError naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except ValueError as e:  # not JSON, or not UTF-8 text
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value
