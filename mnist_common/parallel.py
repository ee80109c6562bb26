"""What the data-parallel runs of both frameworks share: the flags every process must agree on, and how a
process of a several-process run stops on a signal. Each framework's ``parallel.py`` (`mnist_torch.parallel`
with torch.distributed, `mnist_jax.parallel` with jax.distributed) gathers and acts with its own engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from mnist_common.config import TrainConfig
from mnist_common.outdir import release_locks_on_exit


def exit_on_interrupt(line: Callable[[int], str], signums: Sequence[int]) -> None:
    """In a several-process run (either framework), make each of `signums` (SIGINT, ...) stop this process at
    once: print `line(signum)` on stderr and exit with status 128 + signum (130 for SIGINT), without a
    traceback and without the engine's clean-up. This replaces, for these signals and in several-process runs
    alone, the handler of `mnist_common.interrupts` (which unwinds the run to the trainer's top level).

    Python turns SIGINT into a KeyboardInterrupt only when the main thread next runs Python code, which a
    process waiting for its peers (jax.distributed's start-up, a collective) may not do for minutes, and a
    JAX process would then wait up to --dist-timeout at jax.distributed's shutdown barrier, which the
    other processes never reach. So the signal's C handler writes its number to a pipe
    (`signal.set_wakeup_fd`) and a thread waiting on that pipe leaves with `os._exit`; the other processes
    then lose this one and stop with their own "lost another process" line. Call from the main thread."""
    if (
        threading.current_thread() is not threading.main_thread()
    ):  # signals are the main thread's (a run in a test's thread)
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)  # every signal with a Python handler is written here as it arrives
    for signum in signums:
        signal.signal(signum, lambda *_: None)  # a Python handler, so that the signal is written; the thread acts

    def watch() -> None:
        while True:
            for signum in os.read(read_end, 64):  # other signals keep their own handlers
                if signum in signums and last_word():  # else the main thread is ending the process with its own line
                    with contextlib.suppress(Exception):
                        sys.stdout.flush()
                        sys.stderr.flush()
                    # One write() of the whole line: the ranks share one stderr, and print's separate writes of the
                    # text and its newline let two ranks' lines run into one.
                    with contextlib.suppress(OSError):
                        os.write(sys.stderr.fileno(), f"{line(signum)}\n".encode())
                    with contextlib.suppress(OSError):
                        release_locks_on_exit()
                    os._exit(128 + signum)

    threading.Thread(target=watch, name="exit-on-interrupt", daemon=True).start()


_LAST_WORD = threading.Lock()


def last_word() -> bool:
    """True for the first caller alone: a process of a several-process run ends with one line, from its main
    thread (an error, a lost peer) or from its signal watcher (`exit_on_interrupt`), whichever comes first."""
    return _LAST_WORD.acquire(blocking=False)


#: TrainConfig fields that may differ between the processes of one run, left out of `check_same_flags`:
#: the process's own id; paths, which name the same folders differently on different machines (the data
#: folder is each machine's own; process 0 alone writes the out-dir, though --resume reads it everywhere);
#: --quiet, which only process 0's output obeys, and --tensorboard and --profile, which only process 0 writes;
#: and --dist-timeout, each process's own patience. The coordinator is not compared either: processes that
#: reached each other agree on it. Every other field decides the SGD steps, the devices or when training
#: stops, and must be the same in every process.
PER_PROCESS_FIELDS = frozenset(
    {"process_id", "out_dir", "data_dir", "quiet", "dist_timeout", "coordinator", "tensorboard", "profile"}
)


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """The fields of `config` that every process of a data-parallel run must share (`PER_PROCESS_FIELDS`
    aside), as JSON values, in the dataclass's order."""
    return {
        f.name: value
        for f, value in zip(dataclasses.fields(config), config.to_json().values())
        if f.name not in PER_PROCESS_FIELDS
    }


def _as_flag(name: str, value: Any) -> str:
    flag = "--" + name.replace("_", "-")
    if value is None or value is False:
        return f"no {flag}"
    return flag if value is True else f"{flag} {value}"


def first_difference(settings: Sequence[dict[str, Any]], who: str, again: str) -> str | None:
    """The first way in which the processes' `run_settings` (indexed by process or rank; `who` names one)
    differ from process 0's, as one line, or None when they agree: the lowest process, the first field."""
    for index, theirs in enumerate(settings[1:], start=1):
        for name, value in settings[0].items():
            if theirs.get(name) != value:
                return (
                    f"{who} {index} was started with {_as_flag(name, theirs.get(name))}, {who} 0 with "
                    f"{_as_flag(name, value)}; {again}"
                )
    return None


#: Words in the errors that a collective (or JAX's coordination service) raises when a peer process is gone.
LOST_PEER_SIGNS = (
    "Gloo",
    "gloo",
    "NCCL",
    "Connection closed",
    "Connection reset",
    "Broken pipe",
    "timed out",
    "Timed out",
    "coordination service",
    "heartbeat",
)
