"""The base of the project's own errors: each command's ``main`` catches it once and prints its one line.

Every subclass carries a message that already says what was wrong, what was expected and how to fix it,
so printing ``error: {err}`` is the whole of the handling.
"""

from __future__ import annotations


class ProjectError(Exception):
    """An error this project raises on purpose, with a one-line message a user can act on."""


def shown_path(path: object) -> str:
    """A file name as messages and answers show it: as typed when it is printable, else quoted as a Python
    string literal (``'a\\nb.png'``), so that a newline or another control character in it cannot split a line."""
    text = str(path)
    return text if text.isprintable() else repr(text)
