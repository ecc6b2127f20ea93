"""The one error type of the data room."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with the user's data or data options, in one line that names the fix."""
