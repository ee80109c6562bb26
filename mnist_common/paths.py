"""What a path the user named is, and why it cannot be used: each check written once, for two callers.

The command line (`mnist_common.cli`) runs these checks before PyTorch or JAX is imported, and refuses a path
that cannot work with argparse's usage and one ``error:`` line (exit status 2); the loaders (`mnist_torch.data`,
`mnist_common.weights`, `mnist_common.images`) run the same checks for callers that skip the command line
(``main(argv)``, tests, other code) and raise their own one-line errors (exit status 1).
Each function only looks (``stat``, ``access``): it opens, creates and writes nothing. Like `mnist_common.config`,
it imports only the standard library.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mnist_common.config import DEFAULT_DATA_DIR
from mnist_common.errors import shown_path


def _stat(path: Path) -> os.stat_result | None:
    """The file's status, or None when nothing is at `path` (or a file stands where a folder above it should)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def folder_problem(path: Path) -> str | None:
    """What makes `path` unusable as a folder to read from, or None."""
    try:
        status = _stat(path)
    except OSError as err:  # a folder above it unreadable, the name too long, a symlink loop
        return f"cannot be read ({err.strerror})"
    if status is None:
        return "does not exist"
    if not stat.S_ISDIR(status.st_mode):
        return "is a file, not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return "is not readable"
    return None


#: What a path that is neither a folder nor a regular file is, for messages (`stat.S_IS*` tests).
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO, a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_problem(path: Path, pipes: bool = False) -> str | None:
    """What makes `path` unusable as a file to read, or None. It only stats the path, never opens it: a device
    file is refused as not a regular file, and so is a FIFO unless `pipes` (pictures: ``predict /dev/stdin``
    and ``<(cat x.png)`` name a pipe, read once); a file whose length is checked first (weights) needs a real one."""
    try:
        status = _stat(path)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if status is None:
        return (
            "does not exist"
            if not os.path.islink(path)
            else f"is a symlink to {os.readlink(path)}, which does not exist"
        )
    if stat.S_ISDIR(status.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(status.st_mode) and not (pipes and stat.S_ISFIFO(status.st_mode)):
        kind = next((name for test, name in _SPECIAL_FILES if test(status.st_mode)), "a special file")
        return f"is not a regular file (it is {kind})"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


def out_dir_problem(path: Path) -> str | None:
    """What keeps the trainer from writing into `path`, or None. It looks and creates nothing: `path` must
    be a writable folder, or be creatable, that is its nearest existing ancestor a writable folder and every
    missing name short enough for the file system."""
    missing: list[str] = []
    for candidate in (path, *path.parents):
        try:
            status = _stat(candidate)
        except PermissionError:  # a folder above it is not searchable: that folder is reported below
            status = None
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:  # a symlink loop, an I/O error; a name too long is reported below
                return f"cannot be used ({err.strerror})"
            status = None
        if status is None:
            if os.path.islink(candidate):  # a dangling symlink: mkdir would fail on its name (EEXIST), not create it
                what = "is" if candidate == path else f"cannot be created: {candidate} is"
                return (
                    f"{what} a symlink to {os.readlink(candidate)}, "
                    "which does not exist (create that folder, or remove the link)"
                )
            missing.append(candidate.name)
            continue
        if not stat.S_ISDIR(status.st_mode):
            return (
                "is a file, not a folder"
                if candidate == path
                else f"cannot be created: {candidate} is a file, not a folder"
            )
        if not os.access(candidate, os.W_OK | os.X_OK):
            return "is not writable" if candidate == path else f"cannot be created: {candidate} is not writable"
        if candidate != path:
            name_max = os.pathconf(candidate, "PC_NAME_MAX")
            too_long = [name for name in missing if len(os.fsencode(name)) > name_max]
            if too_long:
                return f"cannot be created: a name in it is longer than the file system allows ({name_max} bytes)"
            if len(os.fsencode(str(path))) >= os.pathconf(candidate, "PC_PATH_MAX"):
                return "cannot be created: it is longer than the file system allows"
        return None
    return "cannot be created: no folder above it exists"


def data_dir_problem(path: Path) -> str | None:
    """Why --data-dir `path` cannot be read from, with what it should be, or None."""
    problem = folder_problem(path)
    if problem is None:
        return None
    return f"{path} {problem}; expected the folder holding MNIST/raw/*.gz (the default is {DEFAULT_DATA_DIR})"


def weights_problem(path: Path) -> str | None:
    """Why --weights `path` cannot be read (a FIFO or a device is refused: its length is checked first), or None."""
    problem = file_problem(path)
    if problem is None:
        return None
    return f"{shown_path(path)} {problem}; pass a weights.safetensors written by a training run"
