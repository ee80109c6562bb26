"""Ctrl-C (SIGINT), SIGTERM, SIGHUP and every other signal that ends a command: one line on stderr naming it,
exit status 128 + its number (130, 143, 129, ...), nothing half-written, no lock left behind.

Shared by both frameworks' commands; like `mnist_common.cli` it imports only the standard library, so a
command calls `install` from its ``if __name__ == "__main__":`` block, before PyTorch or JAX load.

From `install` on, each signal of `SIGNALS` stops the command with one line saying what was interrupted and exits
with 128 + the signal's number. Outside `catching` (the imports, and the read-only commands throughout)
the handler says so itself and exits at once (`os._exit`): every file is written atomically
(`mnist_common.files.write_atomically`), so every complete file is whole and none is half-written.
Inside `catching` (a trainer's run) it raises `Interrupted` instead, which unwinds the run (its out-dir
lock is released, partial files removed) up to the command's top level; that says what is kept and how
to resume (`report`). A checkpoint being written when the signal comes is finished first (`deferred`).
After the first signal, further ones are ignored, so that a second Ctrl-C cannot break the cleanup.

Called in-process (tests, benchmarks) without `install`, nothing changes: Ctrl-C is Python's KeyboardInterrupt.

`install` also skips the interpreter's final garbage collections at exit (`skip_final_collection`): PyTorch and
JAX leave well over a million objects, one to three seconds of collection per command on two cores
(docs/design.md), paid after the final line. Nothing of the commands waits on a
finalizer: each file is written whole before the final line, and the TensorBoard log, the out-dir's lock and
the process group are closed explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import os
import shlex
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

#: The signals handled: every one whose default action ends the process and that comes from outside it (a
#: terminal closed: SIGHUP; Ctrl-\\: SIGQUIT; kill -USR1; a batch system's SIGXCPU), each exiting with 128 + its
#: number (129, 130, 131, 143, ...), as a shell reports them. Not SIGPIPE and SIGXFSZ, which Python ignores so
#: that the write fails with an error instead; not the faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT), which
#: come from the process itself and leave nothing to clean up safely; not the real-time signals, which
#: libraries may use for themselves.
SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGTERM",
        "SIGUSR1",
        "SIGUSR2",
        "SIGALRM",
        "SIGVTALRM",
        "SIGPROF",
        "SIGXCPU",
        "SIGPWR",
    )
    if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A signal of `SIGNALS` arrived while a command was `catching` it; a KeyboardInterrupt, so that code
    cleaning up after Ctrl-C cleans up after SIGTERM, SIGHUP and the others too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class _State:
    command = "the command"  # as the user typed it, for the messages
    moment: str | None = None  # what the command is doing, as in "interrupted <moment>", when it says
    kept: str | None = None  # what a trainer has kept so far, as in "kept <kept>"
    resumable: bool = True  # whether what is kept is a checkpoint that --resume continues
    catching = False
    deferring = False
    pending: int | None = None  # a signal that came while `deferred`
    swallowed: int | None = None  # a signal whose `Interrupted` Python reported as unraisable, to raise again
    installed = False


_state = _State()


def _handler(signum: int, frame: object) -> None:
    for other in SIGNALS:  # the first signal decides; the cleanup that follows runs to its end
        signal.signal(other, signal.SIG_IGN)
    # and it says nothing but the one line: a library's warning about the exception unwinding through it
    # (PyTorch's anomaly mode, on while torch.compile traces the backward pass, prints the forward's stack)
    warnings.simplefilter("ignore")
    if _state.deferring:
        _state.pending = signum
        return
    if _state.catching:
        raise Interrupted(signum)
    during = f" {_state.moment}" if _state.moment else ""
    print(
        f"interrupted{during} ({signal.Signals(signum).name}): {_state.command} stopped before it finished; "
        f"it left no half-written file",
        file=sys.stderr,
        flush=True,
    )
    # Exit here rather than raise SystemExit: raised inside a library (an import's plugin discovery, PIL's
    # decoders), it can be swallowed by a broad except and the command would run on after saying it stopped.
    sys.stdout.flush()
    os._exit(128 + signum)


def _reraise(signum: int, frame: object) -> None:
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    swallowed, _state.swallowed = _state.swallowed, None
    if swallowed is not None:
        raise Interrupted(swallowed)


def _unraisable(unraisable: sys.UnraisableHookArgs, previous: Callable[[sys.UnraisableHookArgs], object]) -> None:
    """An `Interrupted` raised where Python cannot propagate it (a garbage-collector callback such as JAX's
    ``_xla_gc_callback``, a ``__del__``) would be printed and dropped, and the run would go on to exit 0: it is
    raised again from the program a moment later (SIGALRM's timer), until it lands where it unwinds the run."""
    if not (isinstance(unraisable.exc_value, Interrupted) and _state.catching):
        previous(unraisable)
        return
    _state.swallowed = unraisable.exc_value.signum
    signal.signal(signal.SIGALRM, _reraise)
    signal.setitimer(signal.ITIMER_REAL, 0.001)


def install(command: str) -> None:
    """Handle every signal of SIGNALS from now on in this process; `command` names it in the line printed.
    A signal the parent set to be ignored stays ignored: ``nohup`` asks a run to outlive its terminal.
    Every command calls this first, so it also skips the interpreter's final garbage collections at exit
    (`skip_final_collection`)."""
    skip_final_collection()
    _state.command = command
    _state.installed = True
    sys.unraisablehook = functools.partial(_unraisable, previous=sys.unraisablehook)  # the hook in force now
    for signum in SIGNALS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _handler)


def skip_final_collection() -> None:
    """Freeze the heap at exit, so that the interpreter's final collections skip it; the memory goes back to the
    system with the process. Called before PyTorch or JAX load: exit handlers run last-registered first, so theirs
    (and any registered later) still run, before this one."""
    atexit.register(gc.freeze)


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Within the block, a signal raises `Interrupted` for the command's top level to `report`."""
    before, _state.catching = _state.catching, True
    try:
        yield
    finally:
        _state.catching = before


def now(what: str) -> None:
    """Name what the command does from now on, for the line of an interrupt: "during epoch 3/10", "while writing
    the checkpoint"."""
    _state.moment = what


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Finish the block (a checkpoint being written) before acting on a signal that comes during it."""
    if not _state.installed or _state.deferring:
        yield
        return
    _state.deferring = True
    try:
        yield
    finally:
        _state.deferring = False
    if _state.pending is not None:
        signum, _state.pending = _state.pending, None
        if _state.catching:
            raise Interrupted(signum)
        _handler(signum, None)


def kept(what: str | None, resumable: bool = True) -> None:
    """Record what an interrupt now leaves behind, e.g. "the checkpoint after epoch 2 in runs/torch/checkpoint.pt";
    `resumable=False` for files --resume does not continue (an earlier run's, not yet replaced by --overwrite)."""
    _state.kept, _state.resumable = what, resumable


def resume_command(module: str, argv: Sequence[str]) -> str:
    """The command line that continues a run started with `argv`: the same flags, plus --resume, less --overwrite (the
    run it replaced is gone once a checkpoint was kept, and the two flags together are refused)."""
    args = [arg for arg in argv if arg != "--overwrite"]
    return shlex.join(["python", "-m", module, *args, *([] if "--resume" in args else ["--resume"])])


def report(err: Interrupted, resume: str | None) -> NoReturn:
    """Print the one line for an interrupted trainer and exit with 128 + the signal's number. `resume` is
    the command that continues the run, given when a checkpoint was kept.

    Called once the run has unwound (its lock released, its partial files removed, its complete files
    closed), it exits at once (`os._exit`), without waiting for work a framework still has queued: JAX's
    dispatched steps (seconds on a busy CPU) whose results nobody will read."""
    with contextlib.suppress(OSError):  # a closed standard output loses nothing: the line goes to stderr
        sys.stdout.flush()
    name = signal.Signals(err.signum).name
    print(
        f"interrupted {_state.moment or 'during start-up'} ({name}); {_what_is_kept(resume)}",
        file=sys.stderr,
        flush=True,
    )
    os._exit(err.exit_status)


def _what_is_kept(resume: str | None) -> str:
    """What a run that stopped before its end leaves, and what to run next: `resume` continues a kept checkpoint."""
    if _state.kept is None:
        return "no epoch was complete, so nothing was kept; run the same command again to start afresh"
    again = f"; continue with: {resume}" if resume else ""
    return f"kept {_state.kept}" + (again if _state.resumable else "; run the same command again to replace them")


def output_closed(err: BaseException, resume: str | None) -> str | None:
    """The one line for a run whose standard output was closed under it (``| head -1`` read its line and exited):
    the closed output, what is kept and the command that continues; None for any other error.

    Python ignores SIGPIPE, so the run's next line raised BrokenPipeError, which is not a full disk or a folder's
    permissions. From here on the standard output is /dev/null: the line goes to stderr, and neither the rest of
    the exit nor the interpreter's last flush of stdout fails again with a second message."""
    if not isinstance(err, BrokenPipeError) or err.filename is not None:  # a file's own error names the file
        return None
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not a file (a test's StringIO): nothing to flush
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return (
        f"the standard output was closed {_state.moment or 'during start-up'} (Broken pipe: the program reading it, "
        f"such as `head`, exited), so the run stopped; {_what_is_kept(resume)}"
    )
