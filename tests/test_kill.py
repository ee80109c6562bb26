"""SIGKILL a training run at random moments and mid-write, resume it each time, and get the uninterrupted run's bytes.

What a killed run may leave is decided by `mnist_common.files`: every file is written to
``<name>.partial`` and renamed once whole, and the next run removes the partial files under its
out-dir lock. So a run killed anywhere, then resumed (`--resume` when a checkpoint exists, as a user
would), must end with the same weights, byte for byte, and the same metrics apart from timings as a
run never killed, and with no stray file. Half the kills land at a random moment of the run; the
other half wait for a ``.partial`` file (a checkpoint's, or once the epochs are done the weights',
metrics' or plots') to appear and kill while it is being written (a kill that leaves the partial file
behind proves it landed mid-write; the test counts those).
The end-to-end run (`pytest -m e2e`, as .ci/run runs it) stops each trainer three times in a row on a small
run: SIGKILL at a random moment, SIGKILL mid-write, SIGTERM (the handler's path) at a random moment; each stop
costs a process start, about 10 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.reproducibility import without_timings
from mnist_jax.checkpoint import CHECKPOINT_FILE as JAX_CHECKPOINT
from mnist_torch.checkpoint import CHECKPOINT_FILE as TORCH_CHECKPOINT
from tests.conftest import SMALL_RUN

CHECKPOINT = {"torch": TORCH_CHECKPOINT, "jax": JAX_CHECKPOINT}
#: All a finished run leaves in its out-dir: nothing half-written, no lock, nothing else.
FINISHED = {"metrics.json", "weights.safetensors", "curves.png", "confusion.png", "misclassified.png"}


def command(framework: str, out_dir: Path, flags: list[str]) -> list[str]:
    resume = ["--resume"] if (out_dir / CHECKPOINT[framework]).exists() else []
    return [sys.executable, "-m", f"mnist_{framework}.train", *flags, "--quiet", "--out-dir", str(out_dir), *resume]


def run_to_the_end(framework: str, out_dir: Path, flags: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command(framework, out_dir, flags), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return time.perf_counter() - start


def kill_at(process: subprocess.Popen, seconds: float, signum: int = signal.SIGKILL) -> bool:
    """Send ``signum`` (SIGKILL: no handler runs) after ``seconds``; False if the run ended first."""
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        process.send_signal(signum)
        status = process.wait(timeout=60)
        assert status in (-signal.SIGKILL, -signal.SIGTERM, 128 + signal.SIGTERM), status  # 143: the handler ran
        return True


def kill_mid_write(process: subprocess.Popen, out_dir: Path, give_up: float) -> bool:
    """SIGKILL as soon as a ``.partial`` file (a checkpoint, or once the epochs are done the weights, metrics
    or plots, being written) appears; False if the run ended first."""
    deadline = time.monotonic() + give_up
    while process.poll() is None and time.monotonic() < deadline:
        with os.scandir(out_dir) if out_dir.is_dir() else contextlib.nullcontext([]) as entries:
            if any(entry.name.endswith(".partial") for entry in entries):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
        time.sleep(0.0002)
    return kill_at(process, 0)


def kill_and_resume(
    framework: str, out_dir: Path, flags: list[str], kills: int, full_run: float, seed: int
) -> dict[str, int]:
    """Kill ``kills`` times (in turn: SIGKILL at a random moment, SIGKILL mid-write, SIGTERM at a random moment),
    then finish; counts what happened.

    A random moment is drawn from the run's length, measured uninterrupted; once a resumed run has
    ended before its kill (nothing much was left to do), from the length of that shorter run."""
    rng = random.Random(seed)
    counts = {"kills": 0, "mid_write": 0, "sigterm": 0, "left_partial": 0, "ended_first": 0}
    run_length = full_run
    while counts["kills"] < kills:
        process = subprocess.Popen(
            command(framework, out_dir, flags), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        start = time.monotonic()
        if counts["kills"] % 3 == 1:
            killed = kill_mid_write(process, out_dir, give_up=full_run * 1.5)
            counts["mid_write"] += killed
        else:
            signum = signal.SIGKILL if counts["kills"] % 3 == 0 else signal.SIGTERM
            killed = kill_at(process, rng.uniform(0.2, run_length), signum)
            counts["sigterm"] += killed and signum == signal.SIGTERM
        if not killed:
            counts["ended_first"] += 1
            run_length = 0.9 * (time.monotonic() - start)
            assert process.returncode == 0, process.stderr.read().decode()
            assert counts["ended_first"] <= kills, counts  # bounded: a run that keeps ending first fails here
            continue
        process.stderr.close()
        counts["kills"] += 1
        counts["left_partial"] += any(out_dir.glob("*.partial"))
    run_to_the_end(framework, out_dir, flags)
    return counts


def learning(out_dir: Path) -> dict:
    """metrics.json without its timings and without the flags that say how the run was started."""
    metrics = without_timings(json.loads((out_dir / "metrics.json").read_text()))
    metrics["config"].pop("resume", None)
    return metrics


def check_killed_run(framework: str, tmp_path: Path, reference: tuple[Path, float], kills: int) -> dict[str, int]:
    """Kill and resume a run of `SMALL_RUN` `kills` times; `reference` is that run's out-dir never killed, and its
    seconds (conftest's `uninterrupted_run`)."""
    (uninterrupted, full_run), killed = reference, tmp_path / "killed"
    counts = kill_and_resume(framework, killed, SMALL_RUN, kills, full_run, seed=len(framework) * 1000 + kills)
    assert (killed / "weights.safetensors").read_bytes() == (uninterrupted / "weights.safetensors").read_bytes(), counts
    assert learning(killed) == learning(uninterrupted)
    assert {p.name for p in killed.iterdir()} == FINISHED | {CHECKPOINT[framework]}, counts  # no .partial, no .lock
    print(f"{framework}: {counts}")
    return counts


@pytest.mark.e2e
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_killed_three_times_in_a_row_then_resumed_equals_an_uninterrupted_run(framework, uninterrupted_run, tmp_path):
    """The chaos test, in CI: SIGKILL at a random moment, SIGKILL inside a write, SIGTERM at a random moment, each
    run resumed from what the last left, and the bytes at the end are the uninterrupted run's (the session's, which
    tests/test_interrupts.py's resumed runs equal too)."""
    counts = check_killed_run(framework, tmp_path, uninterrupted_run(framework), kills=3)
    assert counts["kills"] == 3 and counts["mid_write"] == 1 and counts["sigterm"] == 1


@pytest.mark.e2e
def test_the_lock_names_the_live_run_and_a_killed_runs_lock_does_not_block(tmp_path):
    """Two runs on one out-dir: the second is refused in one line naming the first; once the first is
    killed (its lock file left behind), a new run takes the out-dir over.

    The first run is one epoch of the whole training set, so it is still going, with no checkpoint yet, when the
    second's refusal comes back (a `SMALL_RUN` first could end on its own in that time, taking its lock with it);
    the take-over run is `SMALL_RUN`, started afresh."""
    first = subprocess.Popen(
        command("torch", tmp_path, ["--epochs", "1", "--test-size", "1000"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lock = tmp_path / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run(command("jax", tmp_path, SMALL_RUN), capture_output=True, text=True, timeout=300)
    assert first.poll() is None, f"the first run ended (status {first.returncode}) before the second was refused"
    assert not (tmp_path / TORCH_CHECKPOINT).exists(), "the first run wrote a checkpoint before it was killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stderr.close()
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 1 and len(lines) == 1, second.stderr
    assert lines[0].startswith(
        f"error: {tmp_path} is being written by a run still going (pid {first.pid}, python -m mnist_torch.train, since "
    ), lines[0]
    assert lock.exists()  # what SIGKILL leaves: a lock file no process holds
    run_to_the_end("torch", tmp_path, SMALL_RUN)
    assert {p.name for p in tmp_path.iterdir()} == FINISHED | {TORCH_CHECKPOINT}
    assert os.path.getsize(tmp_path / "weights.safetensors") > 0
