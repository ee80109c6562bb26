"""benchmarks/gpu_run.sh and benchmarks.reproducibility never lose results: a used or unwritable OUT_DIR and
bad options are refused in one line before anything runs, and a stopped run stops its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conditions import REPO

SCRIPT = REPO / "benchmarks" / "gpu_run.sh"

#: Every test here runs the script or a command in a subprocess, for its exit status and its one line.
pytestmark = pytest.mark.e2e


def gpu_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def one_error_line(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_an_out_dir_holding_results_is_refused_and_left_as_it_was(tmp_path):
    earlier = tmp_path / "h200.json"
    earlier.write_text("{}")
    one_error_line(gpu_run(str(tmp_path), "--dry-run"), "already holds files", "new or empty folder")
    assert [p.name for p in tmp_path.iterdir()] == ["h200.json"] and earlier.read_text() == "{}"


def test_an_out_dir_that_is_a_file_or_cannot_be_created_is_refused(tmp_path):
    a_file = tmp_path / "results"
    a_file.write_text("")
    one_error_line(gpu_run(str(a_file), "--dry-run"), "not a folder")
    one_error_line(gpu_run("/proc/self/gpu_run_results", "--dry-run"), "cannot create")


@pytest.mark.parametrize("budget", ["abc", "0600", "59", "1e3", "-5", "99999999", ""])
def test_every_bad_budget_is_refused(tmp_path, budget):
    one_error_line(gpu_run(str(tmp_path / "out"), "--budget", budget), "--budget")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--budget", "--stages", "--name", "--commit"])
def test_an_option_without_its_value_is_refused(tmp_path, option):
    one_error_line(gpu_run(str(tmp_path / "out"), option), f"{option} needs a value")
    one_error_line(gpu_run(option, "--dry-run", str(tmp_path / "out")), f"{option} needs a value")


def test_unknown_stages_are_refused(tmp_path):
    one_error_line(gpu_run(str(tmp_path / "out"), "--stages", "b128,warp"), "unknown stage 'warp'")


def test_reproducibility_checks_its_output_path_before_training(tmp_path):
    for out, words in [(tmp_path, "is a folder"), (tmp_path / "missing" / "repro.json", "does not exist")]:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.reproducibility", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        one_error_line(done, words)
        assert time.perf_counter() - start < 30  # refused before any training run (each takes minutes)


def session_processes(sid: int) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if line.split()[0] == str(sid)]


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "timeout"])
def test_a_stopped_run_stops_its_children_and_says_what_it_kept(signum, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, the terminal's) or `timeout` (SIGTERM to its group) while a
    benchmark stage runs: the script exits 128+N at once with its one line, which the log's `tee`, signalled
    too, must still carry (it died first and the line went to a closed pipe: SIGPIPE, no line), and no process
    of its session (the stage's pytest and anything it started) is left running."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), str(out), "--dry-run", "--stages", "b128,trainers"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        for line in proc.stdout:
            if line.startswith("== train and eval"):
                break
        time.sleep(3)  # the stage's pytest is running
        assert len(session_processes(proc.pid)) > 2
        os.killpg(proc.pid, signum)
        start = time.perf_counter()
        rest = proc.stdout.read()
        assert proc.wait(timeout=30) == 128 + signum
        assert time.perf_counter() - start < 15
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert f"gpu_run: stopped by {signal.Signals(signum).name}" in rest and "Traceback" not in rest
    deadline = time.time() + 10
    while session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert session_processes(proc.pid) == []
    assert Path(out, "dry-run.log").exists()  # what was printed is kept
