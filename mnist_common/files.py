"""Writing files so that a crash never leaves a half-written one, and a damaged one is refused.

Every file the project writes (metrics.json, plots, checkpoints, weights, the extracted
MNIST files) goes through `write_atomically`: the bytes go to ``<name>.partial`` first,
and one rename puts them in place once they are complete. Who may write an out-dir (its lock, claim and
release) is `mnist_common.outdir`'s.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from mnist_common import outdir
from mnist_common.errors import ProjectError, shown_path


def write_atomically(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial_path)``, then rename the result to ``path``; on failure, remove the partial file."""
    path = Path(path)
    if outdir.is_held(path.parent):  # a run's out-dir: never recreate it, stop if it vanished
        outdir.check_held(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)  # fails, e.g., when a folder has the final name: no partial file is left either way
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


# --- outputs that are inputs ---------------------------------------------------------------------------


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether `a` and `b` name one file, by whatever path (a symlink, a hard link, ``./``, ``..``): a command
    writing one would replace the other."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the same path, symlinks followed, is the same file
        return os.path.realpath(a) == os.path.realpath(b)


def written_over(outputs: Iterable[Path], inputs: Iterable[Path]) -> tuple[Path, Path] | None:
    """The first (output, input) pair that names one file, or None: every command that writes files refuses
    such a pair before it writes anything, so that nothing it reads is lost to what it writes."""
    inputs = list(inputs)
    for output in outputs:
        for given in inputs:
            if same_file(output, given):
                return output, given
    return None


# --- checksummed files ---------------------------------------------------------------------------------

#: The first bytes of every checkpoint this project writes; the header line that starts with them reads
#: ``MNIST-CHECKPOINT 1 <framework> <payload bytes> <sha256 of the rest of the header and the payload>``.
CHECKED_MAGIC = b"MNIST-CHECKPOINT"
CHECKED_VERSION = b"1"
#: The longest header line a reader looks for (the magic, version, framework, a length and 64 hex digits).
_HEADER_LIMIT = 200


class CheckedFileError(ProjectError, ValueError):
    """A checksummed file that is not whole, not ours or not of the expected kind; the message says which."""


def checked_bytes(kind: str, payload: bytes) -> bytes:
    """``payload`` behind a one-line header naming ``kind`` (the framework), its length and a SHA-256 that covers
    the header's fields and every payload byte, so a truncated, damaged or hand-edited file is refused, not used."""
    fields = b" ".join([CHECKED_MAGIC, CHECKED_VERSION, kind.encode(), str(len(payload)).encode()])
    digest = hashlib.sha256(fields + b"\n" + payload).hexdigest().encode()
    return fields + b" " + digest + b"\n" + payload


def read_checked(path: Path, kind: str, kinds: dict[str, str], limit: int | None = None) -> bytes:
    """The payload of a file written as ``checked_bytes(kind, ...)``, verified; `CheckedFileError` otherwise.

    ``kinds`` names each kind for messages (``{"torch": "PyTorch", "jax": "JAX"}``), so a file of another
    framework is named as such. The messages say what the file is, never what it might be made to do.
    The header line is read and checked against the file's length (``os.fstat``) before the payload is, and a
    file of more than ``limit`` bytes is refused by its length alone, so no file costs more memory than that.
    """
    shown = shown_path(path)
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if limit is not None and size > limit + _HEADER_LIMIT:
            raise CheckedFileError(
                f"{shown} is {size:,} bytes, more than the {limit:,} any checkpoint of this CNN takes: "
                f"not a checkpoint written by this project's trainers"
            )
        data = file.read(_HEADER_LIMIT)
        newline = data.find(b"\n", 0, _HEADER_LIMIT)
        fields = data[:newline].split(b" ") if newline > 0 else []
        if not data.startswith(CHECKED_MAGIC):
            found = (
                "a plain torch.save file, a zip archive"
                if data.startswith(b"PK")
                else "it is empty"
                if not data
                else "it has no checkpoint header"
            )
            raise CheckedFileError(
                f"{shown} is not a checkpoint written by this project's trainers ({found}; "
                f"expected a file starting with {CHECKED_MAGIC.decode()})"
            )
        if len(fields) != 5 or fields[1] != CHECKED_VERSION or not fields[3].isdigit():
            raise CheckedFileError(
                f"{shown} has a damaged or unknown checkpoint header (expected "
                f"'{CHECKED_MAGIC.decode()} {CHECKED_VERSION.decode()} <framework> <length> <sha256>')"
            )
        found_kind, length, digest = fields[2].decode(errors="replace"), int(fields[3]), fields[4]
        if found_kind != kind and found_kind in kinds:
            raise CheckedFileError(
                f"{shown} is a {kinds[found_kind]} checkpoint, not a {kinds[kind]} one; "
                f"use python -m mnist_{found_kind}'s tools with it"
            )
        stored = size - (newline + 1)
        if stored != length:
            raise CheckedFileError(
                f"{shown} is {'cut short' if stored < length else 'longer than written'}: "
                f"{stored} bytes after its header, {length} expected"
            )
        file.seek(newline + 1)
        payload = file.read(length)
    if len(payload) != length:  # it shrank while being read
        raise CheckedFileError(f"{shown} is cut short: {len(payload)} bytes after its header, {length} expected")
    if hashlib.sha256(b" ".join(fields[:4]) + b"\n" + payload).hexdigest().encode() != digest or found_kind != kind:
        raise CheckedFileError(
            f"{shown} does not match the SHA-256 written with it: it was damaged or edited after it was written"
        )
    return payload


def first_line(err: BaseException, limit: int = 300) -> str:
    """An error's first line, at most `limit` characters (then " ..."), for one-line messages: a library's
    message (a collective's, a deserializer's) can run on for pages. The error's type when it says nothing."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0]
    return line[:limit] + " ..." if len(line) > limit else line
