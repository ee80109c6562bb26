"""What a benchmark ran under: the threads both frameworks use, the machine's load, and the code's provenance.

A figure is only as good as the conditions it was taken in. Both frameworks get the same number of
threads, set explicitly (`set_threads`); every row records the load before and after it and the CPU time
other processes took while it ran (`LoadMeter`), and is marked when they took a noticeable share; every
result records the commit it was measured at and whether the tree was clean (`provenance`).
Standard library only: `benchmarks/gpu_run.sh` and the tests read it without the frameworks.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

#: CPU time other processes may take while a row runs, in cores (a quarter of one core): above it the row
#: is marked as measured on a loaded machine. The 1-minute load average counts this process's own
#: threads too, so it is recorded beside, not used for the mark.
OTHER_LOAD_LIMIT = 0.25

#: Environment variable naming the commit of a copy without git metadata (a device machine's copy), as
#: `gpu_run.sh --commit` passes it; recorded as told, not checked.
COMMIT_VARIABLE = "MNIST_BENCH_COMMIT"


def available_cores() -> int:
    """Cores this process may run on: its affinity mask, which also sizes XLA's CPU thread pool."""
    return len(os.sched_getaffinity(0))


def set_threads(count: int | None) -> int:
    """Give both frameworks `count` threads (all available cores when None) and return the count.

    JAX has no thread setting of its own on the CPU: XLA sizes its thread pool from the process's CPU
    affinity when its CPU backend starts, so this narrows the affinity to `count` cores, before that, and
    sets PyTorch's intra-op threads to the same number. Subprocesses inherit the affinity; they get
    OMP_NUM_THREADS and MKL_NUM_THREADS too (`thread_environment`).
    """
    cores = sorted(os.sched_getaffinity(0))
    count = len(cores) if count is None else count
    if not 1 <= count <= len(cores):
        raise ValueError(f"--bench-threads {count}: this process may use {len(cores)} cores; pass 1 to {len(cores)}")
    os.sched_setaffinity(0, cores[:count])
    for name, value in thread_environment(count).items():
        os.environ[name] = value
    import torch  # noqa: PLC0415 (only here: the rest of the module is for tools without the frameworks)

    torch.set_num_threads(count)
    return count


def thread_environment(count: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(count), "MKL_NUM_THREADS": str(count)}


def loaded(other_cores: float) -> bool:
    """Whether other processes took enough CPU time (in cores) to mark a row as measured under load."""
    return other_cores > OTHER_LOAD_LIMIT


def _busy_and_total_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _own_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class LoadMeter:
    """Measures, around a block: the 1-minute load average before and after, and the CPU time that other
    processes took during it, in cores (all CPU time on the machine, from /proc/stat, less this process's
    and its finished children's). `record()` gives the fields every row carries."""

    def __enter__(self) -> LoadMeter:
        self.load_before = os.getloadavg()[0]
        self.start = time.monotonic()
        self.own_start = _own_cpu_seconds()
        self.busy_start, _ = _busy_and_total_jiffies()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self.start, 1e-9)
        busy, _ = _busy_and_total_jiffies()
        machine_seconds = (busy - self.busy_start) / os.sysconf("SC_CLK_TCK")
        own_seconds = _own_cpu_seconds() - self.own_start
        self.other_cores = max(0.0, (machine_seconds - own_seconds) / wall)
        self.load_after = os.getloadavg()[0]

    def record(self) -> dict[str, Any]:
        return {
            "load_before": round(self.load_before, 2),
            "load_after": round(self.load_after, 2),
            "other_processes_cores": round(self.other_cores, 3),
            "loaded": loaded(self.other_cores),
        }


def other_load_now(seconds: float = 1.0) -> float:
    """Cores that other processes use right now, sampled over `seconds` (this process sleeps meanwhile)."""
    with LoadMeter() as meter:
        time.sleep(seconds)
    return meter.other_cores


def load_warning() -> str | None:
    """A one-line warning when the machine is busy before a benchmark run starts, else None."""
    cores, load, others = os.cpu_count() or 1, os.getloadavg()[0], other_load_now()
    if load <= cores and others <= OTHER_LOAD_LIMIT:
        return None
    return (
        f"warning: the machine is busy before the benchmarks start (1-minute load average {load:.2f} on {cores} "
        f"cores; other processes use {others:.2f} cores): rows measured under load are marked in the report; "
        "stop the other work and run again for clean figures"
    )


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None  # not strip(): porcelain lines start with a space


def provenance() -> dict[str, Any]:
    """The commit the benchmarks run from, whether the tree differs from it, and how that was found out."""
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    if commit is None:
        told = os.environ.get(COMMIT_VARIABLE) or None
        return {
            "commit": told,
            "dirty": None,
            "changed_files": [],
            "commit_source": f"as told by {COMMIT_VARIABLE} (no git metadata to check)"
            if told
            else "unknown: no git metadata",
        }
    status = _git("status", "--porcelain") or ""
    changed = [line[3:] for line in status.splitlines()]
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed[:20], "commit_source": "git"}


def dirty_refusal(info: dict[str, Any]) -> str | None:
    """Why benchmarks should not run from this tree (a one-line error), or None when they may."""
    if info["dirty"] is None and info["commit"] is None:
        return (
            "error: cannot tell which commit these benchmarks would measure (no git metadata here); pass the "
            f"commit this copy was made from ({COMMIT_VARIABLE}=SHA, gpu_run.sh --commit SHA) or --bench-allow-dirty "
            "(gpu_run.sh --allow-dirty) to run anyway, marked as such"
        )
    if info["dirty"]:
        shown = ", ".join(info["changed_files"][:5]) + (" ..." if len(info["changed_files"]) > 5 else "")
        return (
            f"error: the working tree differs from commit {info['commit'][:12]} ({shown}), so the results could not be "
            "traced to code; commit or stash first, or pass --bench-allow-dirty (gpu_run.sh --allow-dirty) to run "
            "anyway, marked as dirty"
        )
    return None


class ProcessError(RuntimeError):
    """A measuring process failed or printed no result; the message ends with its stderr's last lines."""


def last_lines(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


#: Seconds one measuring process may take: well above a cold torch.compile on a small CPU (measured:
#: benchmarks/RESULTS.md, 'Design measurements').
PROCESS_TIMEOUT_S = 600


def run_json_process(module_args: list[str], env: dict[str, str], timeout: float = PROCESS_TIMEOUT_S) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS`` in a fresh process from the repo root, with the same threads for both
    frameworks and `env` on top, and return the JSON object on the last line of its stdout that holds one;
    ProcessError with its stderr's last lines when it fails, runs past `timeout` or prints none."""
    command = [sys.executable, "-m", *module_args]
    shown = " ".join(module_args)
    full_env = {**os.environ, **thread_environment(available_cores()), "PYTHONPATH": str(REPO), **env}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=full_env)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        raise ProcessError(f"`{shown}` ran past {timeout:.0f} s; its stderr ended:\n{last_lines(stderr)}") from None
    if proc.returncode != 0:
        raise ProcessError(
            f"`{shown}` exited with status {proc.returncode}; its stderr ended:\n{last_lines(proc.stderr)}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ProcessError(
            f"`{shown}` printed no JSON result; stdout ended:\n{last_lines(proc.stdout)}\n"
            f"stderr ended:\n{last_lines(proc.stderr)}"
        )
    return json.loads(lines[-1])
