"""Who writes an out-dir: what it already holds, whether a new training run may write there (`claim`), the lock
a run holds while it writes (`out_dir_lock`) and its release, shared by both trainers.

A folder holding a run (its metrics.json, checkpoint or weights) is continued (--resume, same framework)
or replaced on request (--overwrite), never silently: otherwise a second run would replace the first's
results. A run of the other framework is refused either way unless --overwrite: the two would mix.
Checked under the out-dir's lock (`out_dir_lock`), before anything is written.
Imports only the standard library and this project's own light modules, like `mnist_common.config`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mnist_common import interrupts
from mnist_common.config import TrainConfig
from mnist_common.errors import ProjectError

#: The frameworks' names, for messages (and in a checkpoint's header).
FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX"}

#: Each framework's checkpoint file inside an out-dir (`mnist_torch.checkpoint`, `mnist_jax.checkpoint`).
CHECKPOINT_FILES = {"torch": "checkpoint.pt", "jax": "checkpoint.msgpack"}

METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "weights.safetensors"
PLOT_FILES = ("curves.png", "confusion.png", "misclassified.png")

#: The files whose presence means a folder holds a run, and which --overwrite replaces (the plots with them).
RESULT_FILES = (METRICS_FILE, *CHECKPOINT_FILES.values(), WEIGHTS_FILE)


class OutDirHoldsRun(ProjectError, RuntimeError):
    """The out-dir holds a run this one would replace or mix with; the message names the flag that allows it."""


def result_files(out_dir: Path) -> list[str]:
    """The names of the run's result files present in `out_dir` (plots only count alongside one of them)."""
    found = [name for name in RESULT_FILES if (Path(out_dir) / name).is_file()]
    return found + [name for name in PLOT_FILES if found and (Path(out_dir) / name).is_file()]


def run_file_problem(path: Path, allowed_suffix: str = ".png") -> str | None:
    """Why a tool other than the trainer may not write `path`, or None: it is one of a training run's files (its
    results, plots, lock or a partial file), or a file not ending in `allowed_suffix` inside a run's out-dir (a
    folder holding a run's result files or lock). A tool's output then never replaces or mixes with a run."""
    path = Path(path)
    folder = path.parent
    if not any((folder / name).exists() for name in (*RESULT_FILES, LOCK_FILE)):
        return None
    if path.name in (*RESULT_FILES, *PLOT_FILES, LOCK_FILE) or path.name.endswith(".partial"):
        return f"is the {path.name} of the training run in {folder}, which only its trainer writes"
    if path.suffix.lower() != allowed_suffix:
        return f"is not a {allowed_suffix} file, and {folder} holds a training run, whose files stay its own"
    return None


def run_framework(out_dir: Path, found: list[str]) -> str | None:
    """The framework of the run in `out_dir`: by its checkpoint's name, else its metrics.json; None if unknown."""
    frameworks = {framework for framework, name in CHECKPOINT_FILES.items() if name in found}
    if not frameworks and METRICS_FILE in found:
        try:
            frameworks = {json.loads((Path(out_dir) / METRICS_FILE).read_text()).get("framework")}
        except (OSError, ValueError, AttributeError):
            return None
    return frameworks.pop() if len(frameworks) == 1 and frameworks <= set(FRAMEWORKS) else None


def record_earlier(config: TrainConfig) -> list[str]:
    """Tell `interrupts` what a stop now keeps: under --overwrite the earlier run's files, untouched until this
    run's first write, else nothing yet (nor what an earlier run in this process kept). Called before the out-dir
    lock is taken as well as by `claim`, so that a signal landing between the two says so too. Returns the files."""
    found = result_files(config.out_dir)
    if found and config.overwrite:
        interrupts.kept(f"the earlier run's {', '.join(found)} in {config.out_dir}, as they were", resumable=False)
    else:
        interrupts.kept(None)
    return found


def claim(config: TrainConfig, framework: str) -> list[str]:
    """Refuse, in one line, a run that would replace or mix with the run already in its out-dir; return the
    earlier run's files that --overwrite replaces (`replace_earlier`, at this run's first write), else []."""
    out_dir = config.out_dir
    found = record_earlier(config)
    if not found or config.overwrite:
        return found
    owner = run_framework(out_dir, found)
    listed = ", ".join(found)
    what = f"a {FRAMEWORKS[owner]} run" if owner else "a run"
    if owner not in (None, framework):
        raise OutDirHoldsRun(
            f"{out_dir} holds {what} ({listed}), which a {FRAMEWORKS[framework]} run can neither resume nor share; "
            f"pass another --out-dir, or --overwrite to replace that run"
        )
    if config.resume and CHECKPOINT_FILES[framework] not in found:
        raise OutDirHoldsRun(
            f"{out_dir} holds {what} ({listed}) but no {CHECKPOINT_FILES[framework]} to resume from; "
            f"pass --overwrite instead of --resume to replace that run, or another --out-dir"
        )
    if not config.resume:
        raise OutDirHoldsRun(
            f"{out_dir} already holds {what} ({listed}); pass --resume to continue it, --overwrite to replace it, "
            f"or another --out-dir"
        )
    return []


def replace_earlier(out_dir: Path, earlier: list[str]) -> list[str]:
    """Remove the earlier run's files that --overwrite replaces, just before this run's first write, so that
    a run ending before it has written anything leaves them as they were, and a run never mixes with them.
    Returns [], what is left to replace."""
    for name in earlier:
        (Path(out_dir) / name).unlink(missing_ok=True)
    if earlier:
        interrupts.kept(None)  # the earlier run is gone; the checkpoint about to be written is kept next
    return []


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


def is_held(out_dir: Path) -> bool:
    """Whether this process holds `out_dir`'s lock: a folder `write_atomically` must never recreate."""
    return os.path.abspath(out_dir) in _held


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
