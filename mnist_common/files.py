"""Writing files so that a crash never leaves a half-written one, a damaged one is refused, and runs don't mix.

Every file the project writes (metrics.json, plots, checkpoints, weights, the extracted
MNIST files) goes through `write_atomically`: the bytes go to ``<name>.partial`` first,
and one rename puts them in place once they are complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from mnist_common.errors import ProjectError, shown_path


def write_atomically(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(partial_path)``, then rename the result to ``path``; on failure, remove the partial file."""
    path = Path(path)
    if os.path.abspath(path.parent) in _held:  # a run's out-dir: never recreate it, stop if it vanished
        check_held(path.parent)
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


# --- one process per lock -----------------------------------------------------------------------------


def try_lock(path: Path | str) -> tuple[IO[str], None] | tuple[None, str]:
    """Take the kernel's exclusive lock (``flock``) on ``path`` without waiting.

    ``(the open file, None)`` when taken: the lock lasts while that file stays open, and the kernel drops it
    when its process ends however (SIGKILL included), so a leftover file is stale by construction and is
    taken over. ``(None, holder)`` when another live process holds it: ``holder`` is what that process wrote
    with `record_holder` ("another process" when it wrote nothing). Opening the file may raise `OSError`.
    Used by `out_dir_lock` and by `mnist_jax.parallel.hold_coordinator_port`.
    """
    while True:
        handle = open(path, "a+")  # kept open (and locked) by the caller: no `with`
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return None, holder
        try:  # the file may have been removed by the holder between our open and our flock: lock the live one
            if os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle, None
        except FileNotFoundError:
            pass
        handle.close()


def record_holder(handle: IO[str], holder: str) -> None:
    """Write, in a lock file taken with `try_lock`, who holds it: the text a refused process's message names."""
    handle.seek(0)
    handle.truncate()
    handle.write(holder)
    handle.flush()


# --- one run per out-dir -------------------------------------------------------------------------------

#: The lock file inside an out-dir while a trainer writes there.
LOCK_FILE = ".lock"


class OutDirBusy(ProjectError, RuntimeError):
    """Another live process is writing the out-dir; the message names it."""


class OutDirLost(ProjectError, RuntimeError):
    """The out-dir, or its lock file, vanished while this run held it; the message says the run stopped."""


#: The out-dirs this process holds the lock of (by absolute path), with the open lock file.
_held: dict[str, IO[str]] = {}


def _is_ours(path: Path, handle: IO[str]) -> bool:
    """Whether `path` is still the very file `handle` holds open (not removed, not replaced by another)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except OSError:
        return False


def _unlink_if_ours(path: Path, handle: IO[str]) -> None:
    """Remove the lock file `path` if it is still ours: never the lock of a run that took a recreated folder."""
    if _is_ours(path, handle):
        path.unlink(missing_ok=True)


def check_held(out_dir: Path) -> None:
    """Raise `OutDirLost` if the out-dir this process locked, or its lock file, is gone or was replaced:
    its results went with it, and writing on would recreate the folder without a lock, where a second
    run would not be refused. Called before every write into it (`write_atomically`) and at each epoch end."""
    handle = _held.get(os.path.abspath(out_dir))
    if handle is not None and not _is_ours(Path(out_dir) / LOCK_FILE, handle):
        raise OutDirLost(
            f"{out_dir} or its {LOCK_FILE} was removed while this run was writing there; stopped without writing "
            f"into it again, so that nothing mixes with what is there now; train again, into another --out-dir "
            f"if something else uses that one"
        )


@contextlib.contextmanager
def out_dir_lock(out_dir: Path, command: str) -> Iterator[None]:
    """Hold ``<out_dir>/.lock`` while a run writes there, so that a second run is refused instead of mixing files.

    The lock is the kernel's (``flock``, `try_lock`), not the file's existence: a run killed with SIGKILL
    holds nothing any more, so its leftover file is stale by construction and the next run takes it over.
    The file records the holder's pid and command for the message a refused run prints; it is removed on exit.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    handle, holder = try_lock(path)
    if handle is None:
        raise OutDirBusy(
            f"{out_dir} is being written by a run still going ({holder}); wait for it to end, or pass another --out-dir"
        )
    key = os.path.abspath(out_dir)
    try:
        record_holder(handle, f"pid {os.getpid()}, {command}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        remove_partial_files(out_dir)
        _held[key] = handle
        yield
    finally:
        _held.pop(key, None)
        _unlink_if_ours(path, handle)
        handle.close()


def release_locks_on_exit() -> None:
    """Remove the lock files this process holds, for a process about to leave with `os._exit` (a signal in a
    several-process run, `mnist_common.parallel.exit_on_interrupt`), which skips `out_dir_lock`'s clean-up. The
    kernel's lock goes with the process anyway; this removes the file, so that no stale `.lock` is left behind."""
    for key, handle in list(_held.items()):
        _unlink_if_ours(Path(key) / LOCK_FILE, handle)


def remove_partial_files(out_dir: Path) -> list[Path]:
    """Delete the ``*.partial`` files a killed run left (it died mid-write; the complete files are untouched).
    Called only under `out_dir_lock`, so no live run's partial file is removed."""
    removed = sorted(Path(out_dir).glob("*.partial"))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def write_failure(err: OSError, out_dir: Path) -> str:
    """One line for a write that failed (no space, no permission, a file where a folder should be): what, where,
    and that nothing complete was lost, since every file is replaced only once its successor is whole."""
    where = err.filename or out_dir
    return (
        f"cannot write {where}: {err.strerror or err}; files already in {out_dir} are as they were "
        f"(each is replaced only once its successor is complete); free some space, fix the permissions, "
        f"or pass another --out-dir"
    )


def first_line(err: BaseException, limit: int = 300) -> str:
    """An error's first line, at most `limit` characters (then " ..."), for one-line messages: a library's
    message (a collective's, a deserializer's) can run on for pages. The error's type when it says nothing."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0]
    return line[:limit] + " ..." if len(line) > limit else line
