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


def memory_failure(err: BaseException) -> str | None:
    """The one line for a failure that is this process running out of memory, or None for any other error.

    Under a memory limit (``ulimit -v``) too small for a framework, its import fails while mapping a shared
    library ("failed to map segment", "cannot allocate memory") and a later allocation raises MemoryError: both
    say which limit was hit and what to do, instead of a traceback.
    """
    text = str(err).lower()
    if not (
        isinstance(err, MemoryError)
        or (isinstance(err, (ImportError, OSError)) and ("failed to map segment" in text or "cannot allocate" in text))
    ):
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    limit = "no address-space limit is set" if soft == resource.RLIM_INFINITY else f"ulimit -v is {soft // 1024} KiB"
    what = type(err).__name__ + (f": {str(err).strip().splitlines()[0]}" if str(err).strip() else "")
    return (
        f"out of memory ({what}); {limit}: PyTorch or JAX with MNIST needs about 3 GB of address space and more; "
        "raise or remove the limit (ulimit -v unlimited), or free memory, and run again"
    )


def install_memory_failure_hook() -> None:
    """Make an uncaught out-of-memory failure (`memory_failure`) end the process in one line, status 1; every other
    uncaught exception keeps Python's traceback."""
    import sys

    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: object) -> None:
        line = memory_failure(value)
        if line is None:
            previous(kind, value, tb)
        else:
            print(f"error: {line}", file=sys.stderr, flush=True)

    sys.excepthook = hook
