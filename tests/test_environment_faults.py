"""Faults of the machine rather than of the command line, each ending in one line with what to do (issue 34's
environment class): another program on the JAX coordinator's port, a memory limit too small for the framework, a
current folder deleted under the shell."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # commands in subprocesses

REPO = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def assert_one_line(done: subprocess.CompletedProcess, status: int, start: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(start), lines[0]
    return lines[0]


def test_a_foreign_program_on_the_coordinator_port_stops_every_process_in_one_line(tmp_path):
    """Process 0 cannot listen on the port; process 1 connected to the foreign listener and, before the probe of
    `wait_for_coordinator`, ended in a C++ abort (status 134) after --dist-timeout. Both say so in one line."""
    out = tmp_path / "run"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        command = [sys.executable, "-m", "mnist_jax.train", "--num-processes", "2", "--quiet", "--epochs", "1"]
        command += ["--coordinator", f"localhost:{port}", "--dist-timeout", "20", "--out-dir", str(out)]
        processes = [
            subprocess.Popen(command + ["--process-id", str(index)], stderr=subprocess.PIPE, text=True, env=env())
            for index in (0, 1)
        ]
        errors = [process.communicate(timeout=120)[1] for process in processes]
    for index, (process, stderr) in enumerate(zip(processes, errors)):
        done = subprocess.CompletedProcess(process.args, process.returncode, None, stderr)
        what = "is taken by another program" if index == 0 else "is held by another program, not a JAX coordinator"
        line = assert_one_line(done, 1, f"error: process {index} of 2: port {port} of --coordinator localhost:{port}")
        assert what in line and line.endswith("or stop that program"), line
    assert not list(out.glob("*.lock"))  # nothing at all, as the run stops before its out-dir is locked


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_memory_limit_too_small_for_the_framework_is_one_line(framework, tmp_path):
    limit = 1 << 30  # 1 GiB of address space: Python starts, neither framework's libraries map
    # Set by the shell, as a user does: a preexec_fn would run Python in a child forked from this
    # multithreaded process (JAX's threads), which can deadlock.
    command = [sys.executable, "-m", f"mnist_{framework}.train", "--epochs", "1", "--out-dir", str(tmp_path / "run")]
    done = subprocess.run(
        ["bash", "-c", f'ulimit -v {limit // 1024} && exec "$@"', "bash", *command],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    line = assert_one_line(done, 1, "error: out of memory (")
    assert f"ulimit -v is {limit // 1024} KiB" in line and "ulimit -v unlimited" in line


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_deleted_current_folder_is_one_line(framework, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m mnist_{framework}.train --epochs 1'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env(), timeout=300)
    assert_one_line(done, 1, "error: the current folder no longer exists (deleted or moved away); cd into")
