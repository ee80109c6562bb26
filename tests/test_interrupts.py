"""Ctrl-C (SIGINT) and SIGTERM sent to the real commands: one line, exit 130 / 143, a clean out-dir, and a
resume that completes.

`mnist_common.interrupts` turns either signal into one line on stderr saying what was interrupted, what is
kept and the command that continues the run, and exits with 128 + the signal's number, after the run has
released its out-dir's lock and removed its partial files. These tests send real signals to real
``python -m`` processes at moments read from their output (after an epoch's line: mid-epoch; after the
"resumed from" line: during compilation), and check the line, the exit status, the out-dir, that the
process was gone within a few seconds (a functional bound on a busy 2-core machine, not a speed test),
and that the printed --resume command then finishes the run. Plus the repair of Inductor's cache that
an interrupted ``--mode compile`` damages.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mnist_common.outdir import LOCK_FILE
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax.checkpoint import CHECKPOINT_FILE as JAX_CHECKPOINT
from mnist_torch.checkpoint import CHECKPOINT_FILE as TORCH_CHECKPOINT
from tests.conftest import SMALL_RUN

pytestmark = pytest.mark.e2e


def compile_afresh() -> dict[str, str]:
    """The environment of a run to be interrupted during compilation: it compiles, as a first run does, instead of
    loading the session's cache (tests/conftest.py). The other runs load it, as a user's second run would."""
    return {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}


CHECKPOINT = {"torch": TORCH_CHECKPOINT, "jax": JAX_CHECKPOINT}
FLAGS = SMALL_RUN
#: Seconds from the signal to the process's exit that count as stopping promptly (measured: 0.2-0.9 s).
PROMPT = 3.0
#: The most any one process may take in these tests.
TIMEOUT = 300


class Run:
    """A command started in a subprocess, its stdout and stderr read line by line as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, own_group: bool = False) -> None:
        """`own_group`: the command leads a process group of its own, as a terminal's foreground job does, so that
        `signal(..., group=True)` reaches it and every process it started (Ctrl-C)."""
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=own_group
        )
        self.lines: dict[str, queue.Queue[str | None]] = {"stdout": queue.Queue(), "stderr": queue.Queue()}
        self.seen: dict[str, list[str]] = {"stdout": [], "stderr": []}
        for name in self.lines:
            threading.Thread(target=self._read, args=(name,), daemon=True).start()

    def _read(self, name: str) -> None:
        for line in getattr(self.process, name):
            self.lines[name].put(line.rstrip("\n"))
        self.lines[name].put(None)

    def wait_for(self, pattern: str, stream: str = "stdout", timeout: float = TIMEOUT) -> str:
        """The first line of `stream` matching `pattern`; fails if the process ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines[stream].get(timeout=max(0.0, deadline - time.monotonic()))
            assert line is not None, f"the process ended before printing {pattern!r}: {self.finish()}"
            self.seen[stream].append(line)
            if re.search(pattern, line):
                return line

    def signal(self, signum: int, group: bool = False) -> tuple[int, float]:
        """Send `signum` (to the whole process group with `group`); the exit status and the seconds until the process
        was gone."""
        start = time.monotonic()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        status = self.process.wait(timeout=TIMEOUT)
        return status, time.monotonic() - start

    def finish(self) -> str:
        """Everything the process wrote to stderr, once it has ended."""
        self.process.wait(timeout=TIMEOUT)
        while (line := self.lines["stderr"].get(timeout=TIMEOUT)) is not None:
            self.seen["stderr"].append(line)
        return "\n".join(self.seen["stderr"])


def trainer(framework: str, *flags: str) -> list[str]:
    return [sys.executable, "-m", f"mnist_{framework}.train", *flags]


def assert_interrupted(run: Run, signum: int, status: int, seconds: float, out_dir: Path, line: str) -> str:
    """The exit status, the one line (matching `line`) ending stderr without a traceback, the out-dir clean."""
    stderr = run.finish()
    assert status == 128 + signum, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.splitlines()[-1]
    assert re.fullmatch(line, last), last
    assert seconds < PROMPT, f"the process took {seconds:.1f}s to exit after {signal.Signals(signum).name}"
    assert not (out_dir / LOCK_FILE).exists(), "the out-dir's lock was left behind"
    assert not list(out_dir.glob("*.partial")), sorted(p.name for p in out_dir.iterdir())
    return last


def sigterm_once_locked(run: Run, out_dir: Path, line: str) -> str:
    """SIGTERM as soon as the run holds its out-dir (its lock file exists), then `assert_interrupted` with `line`."""
    deadline = time.monotonic() + TIMEOUT
    while not (out_dir / LOCK_FILE).exists():
        assert run.process.poll() is None and time.monotonic() < deadline, run.finish()
        time.sleep(0.01)
    status, seconds = run.signal(signal.SIGTERM)
    return assert_interrupted(run, signal.SIGTERM, status, seconds, out_dir, line)


def kept_line(framework: str, during: str, signum: int, out_dir: Path) -> str:
    """The line of a run interrupted `during` something after its first epoch's checkpoint, as a regex."""
    name = signal.Signals(signum).name
    return (
        rf"interrupted {during} \({name}\); "
        rf"kept the checkpoint after epoch 1 in {re.escape(str(out_dir / CHECKPOINT[framework]))}; "
        rf"continue with: python -m mnist_{framework}\.train .*--resume"
    )


def resume_command(line: str) -> list[str]:
    """The command the line says to continue with, run by this Python."""
    words = shlex.split(line.split("continue with: ", 1)[1])
    assert words[:2] == ["python", "-m"], words
    return [sys.executable, *words[1:]]


@pytest.mark.parametrize(
    ("framework", "first", "second"),
    [
        ("torch", signal.SIGINT, signal.SIGTERM),
        ("jax", signal.SIGTERM, signal.SIGINT),
    ],
)
def test_interrupted_mid_epoch_and_during_compilation_then_resumed(
    framework, first, second, uninterrupted_run, tmp_path
):
    """Mid-epoch (epoch 2, just after epoch 1's line), then the resumed run during compilation, then the resume to
    the end, whose weights are the session's uninterrupted run's, byte for byte."""
    run = Run(trainer(framework, *FLAGS, "--out-dir", str(tmp_path)))
    run.wait_for(r"^epoch 1/2 ")
    status, seconds = run.signal(first)
    # epoch 1's line comes just after its checkpoint is saved: the signal may land before epoch 2 starts
    during = "(during epoch 2/2|after epoch 1/2)"
    line = assert_interrupted(run, first, status, seconds, tmp_path, kept_line(framework, during, first, tmp_path))
    command = resume_command(line)
    assert command[1:] == ["-m", f"mnist_{framework}.train", *FLAGS, "--out-dir", str(tmp_path), "--resume"]

    run = Run(command, env=compile_afresh())
    run.wait_for(r"^resumed from .* after epoch 1$")
    status, seconds = run.signal(second)
    # compiling takes seconds on the CPU, but torch's eager mode only prepares its step: then epoch 2 is hit
    during = "during compilation" if framework == "jax" else "(while preparing the train step|during epoch 2/2)"
    assert_interrupted(run, second, status, seconds, tmp_path, kept_line(framework, during, second, tmp_path))

    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    assert [e["epoch"] for e in json.loads((tmp_path / "metrics.json").read_text())["epochs"]] == [1, 2]
    assert not (tmp_path / LOCK_FILE).exists() and not list(tmp_path.glob("*.partial"))
    reference, _ = uninterrupted_run(framework)
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == (reference / WEIGHTS_FILE).read_bytes()


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_interrupted_before_the_first_epoch_keeps_nothing_and_says_so(framework, tmp_path):
    """SIGTERM as soon as the run holds its out-dir (start-up, data, compilation): nothing to resume, nothing left."""
    run = Run(trainer(framework, *FLAGS, "--out-dir", str(tmp_path)))
    sigterm_once_locked(
        run,
        tmp_path,
        r"interrupted (during start-up|while loading the MNIST data|during compilation|while preparing the train step)"
        r" \(SIGTERM\); no epoch was complete, so nothing was kept; run the same command again to start afresh",
    )
    assert not list(tmp_path.iterdir())


def test_an_overwrite_interrupted_before_its_first_epoch_says_the_earlier_run_is_there(trained_run, tmp_path):
    """--overwrite replaces an earlier run at its own first write: stopped before it, the earlier run's files are
    byte for byte as they were, and the line says so instead of "nothing was kept"."""
    for path in trained_run("torch").iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    run = Run(trainer("torch", *FLAGS, "--overwrite", "--out-dir", str(tmp_path)))
    sigterm_once_locked(
        run,
        tmp_path,
        r"interrupted (during start-up|while loading the MNIST data|while preparing the train step) \(SIGTERM\); "
        rf"kept the earlier run's .*metrics\.json.* in {re.escape(str(tmp_path))}, as they were; "
        r"run the same command again to replace them",
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize("command", ["mnist_torch.evaluate", "mnist_jax.predict"])
def test_read_only_commands_interrupted_while_loading(command, tmp_path):
    """The commands that only read: one line and 130, even in the middle of importing PyTorch or JAX."""
    (tmp_path / "digit.png").write_bytes(b"not read: the command is stopped first")
    args = ["--checkpoint", str(tmp_path)] if command.endswith("evaluate") else [str(tmp_path / "digit.png")]
    run = Run([sys.executable, "-m", command, *args])
    time.sleep(1.0)  # past the command-line check, within the framework's import (which takes seconds)
    # A command that dies at once (a broken import, a bad flag) must fail here, not pass as skipped.
    assert run.process.poll() is None, (
        f"{command} ended within a second, before it could be interrupted: {run.finish()}"
    )
    status, seconds = run.signal(signal.SIGINT)
    stderr = run.finish()
    assert status == 130 and "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == (
        f"interrupted (SIGINT): python -m {command} stopped before it finished; it left no half-written file"
    )
    assert seconds < PROMPT


#: The line of a torch run interrupted by SIGINT while it compiles its first step.
INTERRUPTED_COMPILING = (
    r"interrupted during compilation \(SIGINT\); no epoch was complete, so nothing was kept; "
    r"run the same command again to start afresh"
)


def compiler_running(group: int) -> bool:
    """Whether a C++ compiler (Inductor building a kernel into its cache) runs in process group `group`."""
    ps = subprocess.run(["ps", "-o", "args=", "-g", str(group)], capture_output=True, text=True, check=False).stdout
    return any(Path(line.split()[0]).name in ("g++", "c++", "cc1plus", "ld") for line in ps.splitlines() if line)


def test_compile_repairs_the_inductor_cache_an_interrupted_compilation_damaged(tmp_path):
    """Empty .so and .o files (what a Ctrl-C during Inductor's C++ build leaves) are removed with one line; one being
    written now (fresh) is not; and a Ctrl-C during the compilation that follows is one line too. Then a terminal's
    Ctrl-C (the whole process group) while the C++ compiler writes a kernel into the cache: one line that says to run
    the same command again, and that command, run at once, completes."""
    cache = tmp_path / "inductor"
    damaged = [cache / "ab" / "cabdamaged.main.so", cache / "ab" / "cabdamaged.optimized.o"]
    fresh = cache / "cd" / "ccdbeingwritten.main.so"
    for path in (*damaged, fresh):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for path in damaged:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    out_dir = tmp_path / "run"
    command = trainer("torch", *FLAGS, "--mode", "compile", "--out-dir", str(out_dir))
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    run = Run(command, env=env)
    note = run.wait_for(r"^note: ", stream="stderr")
    assert note == (
        f"note: removed 2 empty compiled kernel files (.so, .o) that an interrupted compilation left in Inductor's "
        f"cache {cache}; this compilation rebuilds what it needs"
    )
    assert not any(path.exists() for path in damaged) and fresh.exists()
    status, seconds = run.signal(signal.SIGINT)
    assert_interrupted(run, signal.SIGINT, status, seconds, out_dir, INTERRUPTED_COMPILING)
    assert run.seen["stderr"].count(note) == 1 and len(run.seen["stderr"]) == 2, run.seen["stderr"]

    run = Run(command, env=env, own_group=True)
    deadline = time.monotonic() + TIMEOUT
    while not compiler_running(run.process.pid):
        assert run.process.poll() is None and time.monotonic() < deadline, f"no C++ build was seen: {run.finish()}"
        time.sleep(0.02)
    status, seconds = run.signal(signal.SIGINT, group=True)
    line = assert_interrupted(run, signal.SIGINT, status, seconds, out_dir, INTERRUPTED_COMPILING)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (line, done.stderr[-3000:])
    assert [e["epoch"] for e in json.loads((out_dir / "metrics.json").read_text())["epochs"]] == [1, 2]
