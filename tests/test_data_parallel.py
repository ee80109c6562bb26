"""Data parallelism: two devices or two processes take the one-device run's SGD steps.

Each framework trains 20 SGD steps (2 epochs of 10 batches of 128) on one device, then the same run
data-parallel, on the CPU: JAX on 2 XLA host devices in one process (``--devices 2``), and JAX on 2
processes joined by `jax.distributed` (gloo); PyTorch on 2 processes under ``torchrun`` with DDP (gloo).
The 2-process runs are killed once (one process SIGKILLed after epoch 1: the other must stop within
a bound, with one line) and resumed with ``--resume``, so the comparison also covers resuming.

The bound. Split over 2 devices, each gradient is the mean of two half-batch means instead of one
mean over 128 images: the same numbers, added in another order, so each step differs from the
one-device step by float32 rounding (~1e-7 relative), which the following steps carry along.
Measured 2026-11-27 on the 2-core CI machine after 20 steps: at most 5.6e-6 (JAX, 2 devices or 2
processes) and 1.7e-7 (PyTorch) relative difference in any weight tensor (`relative_error`: the
largest absolute difference over the tensor's largest magnitude). Asserted: 5e-5, about 10x headroom,
still 20x below the 1e-3 that tests/test_parity.py allows between the two frameworks.

The runs use --lr 0.01. At the default 0.1 these first steps on 1 280 images are in SGD's unstable
phase (the loss rises again in epoch 2), where any difference, rounding included, grows
chaotically: 7e-3 relative after 20 steps and 0.19 after 30, for JAX on 2 devices, measured the
same day. That measures the trajectory's sensitivity, not the arithmetic, so the test stays where
the trajectory is stable. The 2-process JAX run compiles the 2-device run's program and matched it
bit for bit.

The runs in subprocesses are marked e2e (`pytest -m e2e`, as .ci/run runs them); the checks behind them
(`make_mesh`, `per_device_batch`, `local_columns`) are tested in-process in the default run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mnist_common.cli import parse_config
from mnist_common.config import DeviceUnavailable, DistributedError, per_device_batch
from mnist_jax import train as jax_train
from mnist_jax.checkpoint import CHECKPOINT_FILE as JAX_CHECKPOINT
from mnist_torch import train as torch_train
from mnist_torch.checkpoint import CHECKPOINT_FILE as TORCH_CHECKPOINT
from tests.numerics import relative_error

#: Test images each epoch is evaluated on: what is compared is the runs' agreement, not the accuracy itself.
TEST_SIZE = 2000
#: 20 SGD steps: 2 epochs of 10 batches of 128, at a learning rate where the trajectory is stable (docstring).
FLAGS = [
    "--epochs",
    "2",
    "--train-size",
    "1280",
    "--test-size",
    str(TEST_SIZE),
    "--batch-size",
    "128",
    "--lr",
    "0.01",
    "--quiet",
    "--dist-timeout",
    "30",
]
#: The largest relative difference in any weight tensor between a data-parallel and a one-device run (docstring).
BOUND = 5e-5
#: Seconds within which a process whose peer died, or whose coordinator never came, must have stopped.
STOP_BOUND = 60
CHECKPOINT = {"torch": TORCH_CHECKPOINT, "jax": JAX_CHECKPOINT}
#: All a finished run leaves in its out-dir, whatever the number of processes: process 0's files alone.
FINISHED = {"metrics.json", "weights.safetensors", "curves.png", "confusion.png", "misclassified.png"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def trainer(framework: str, out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", f"mnist_{framework}.train", *FLAGS, "--out-dir", str(out_dir), *extra]


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def jax_processes(out_dir: Path, *extra: str) -> list[subprocess.Popen]:
    coordinator = f"localhost:{free_port()}"
    return [
        subprocess.Popen(
            trainer(
                "jax", out_dir, "--num-processes", "2", "--process-id", str(i), "--coordinator", coordinator, *extra
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def torchrun(out_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mnist_torch.train",
        *FLAGS,
        "--out-dir",
        str(out_dir),
        *extra,
    ]


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """torchrun's worker processes by rank, read from their environment."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks = {}
    for pid in children:
        env = dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in line)
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(pid)
    return ranks


def wait_for(path: Path, processes: list[subprocess.Popen], limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert all(p.poll() is None for p in processes), "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no {path.name} after {limit} s"
        time.sleep(0.01)


def weights_difference(expected: Path, actual: Path) -> float:
    a, b = load_file(expected / "weights.safetensors"), load_file(actual / "weights.safetensors")
    assert a.keys() == b.keys()
    return max(relative_error(a[k], b[k]) for k in a)


def assert_same_run(framework: str, one: Path, parallel: Path, processes: int, devices: int) -> float:
    """Weights within BOUND, the same metrics within rounding, and only process 0's files; returns the difference."""
    difference = weights_difference(one, parallel)
    assert difference <= BOUND, (framework, processes, devices, difference)
    expected, actual = (json.loads((d / "metrics.json").read_text()) for d in (one, parallel))
    assert actual["parallel"] == {"processes": processes, "devices": devices}
    assert expected["parallel"] == {"processes": 1, "devices": 1}
    for e, a in zip(expected["epochs"], actual["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(e["train_loss"], rel=1e-4)
        assert (
            abs(a["test_accuracy"] - e["test_accuracy"]) * TEST_SIZE <= 3
        )  # at most 3 of the test images answered otherwise
    assert {p.name for p in parallel.iterdir()} == FINISHED | {CHECKPOINT[framework]}
    print(f"{framework}, {processes} processes, {devices} devices: largest relative weight difference {difference:.2e}")
    return difference


def assert_stopped_in_one_line(stderr: str, start: str) -> None:
    """Exactly one ``error:`` line, the last one, saying `start`...; no Python traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and errors[0].startswith(start), stderr[-3000:]
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> dict[str, Path]:
    """Each framework's one-device run of FLAGS, trained in this process (tests/test_cli.py's e2e
    `test_short_real_training_learns_and_writes_metrics` shows that the command line and the in-process run give
    the same bytes): two process starts saved."""
    runs = {}
    for framework, trainer_module in (("torch", torch_train), ("jax", jax_train)):
        runs[framework] = tmp_path_factory.mktemp(f"{framework}-one")
        trainer_module.train(parse_config(framework, [*FLAGS, "--out-dir", str(runs[framework])]))
    return runs


@pytest.mark.e2e
def test_jax_two_devices_in_one_process_train_like_one(one_device, tmp_path):
    run(trainer("jax", tmp_path, "--devices", "2"), env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert_same_run("jax", one_device["jax"], tmp_path, processes=1, devices=2)


@pytest.mark.e2e
def test_jax_two_processes_survive_a_lost_process_and_resume_to_the_same_weights(one_device, tmp_path):
    first = jax_processes(tmp_path)
    wait_for(tmp_path / JAX_CHECKPOINT, first)
    first[1].send_signal(signal.SIGKILL)
    start = time.monotonic()
    _, stderr = first[0].communicate(timeout=STOP_BOUND)
    assert time.monotonic() - start < STOP_BOUND and first[0].returncode == 1
    first[1].communicate()
    assert_stopped_in_one_line(stderr, "error: process 0 of 2 lost another process of the run")

    resumed = jax_processes(tmp_path, "--resume")
    outputs = [p.communicate(timeout=600) for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    said = [
        [line for line in out.splitlines() if not line.startswith("[Gloo]")] for out, _ in outputs
    ]  # gloo's own note
    assert said[1] == [] and len(said[0]) == 1 and said[0][0].startswith("test accuracy ")  # process 0 alone reports
    assert_same_run("jax", one_device["jax"], tmp_path, processes=2, devices=2)


@pytest.mark.e2e
def test_torchrun_survives_a_lost_rank_and_resumes_to_the_same_weights(one_device, tmp_path):
    launcher = subprocess.Popen(torchrun(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(tmp_path / TORCH_CHECKPOINT, [launcher])
    os.kill(rank_pids(launcher)[1], signal.SIGKILL)
    start = time.monotonic()
    stdout, stderr = launcher.communicate(timeout=STOP_BOUND)
    assert time.monotonic() - start < STOP_BOUND and launcher.returncode != 0
    # rank 0 says what happened in one line: its collective lost the peer, or torchrun stopped it first
    said = [line for line in stderr.splitlines() if line.startswith("error: rank 0 of 2 ")]
    assert len(said) == 1 and ("lost another process" in said[0] or "was stopped (SIGTERM)" in said[0]), stderr[-3000:]

    done = run(torchrun(tmp_path, "--resume"))
    assert done.stdout.count("test accuracy ") == 1  # rank 0 alone reports
    assert_same_run("torch", one_device["torch"], tmp_path, processes=2, devices=2)


@pytest.mark.e2e
def test_a_process_without_its_coordinator_stops_in_one_line(tmp_path):
    """JAX's process 1 with no process 0, PyTorch's rank 1 with no rank 0 (launched as torchrun would)."""
    port = free_port()
    commands = {
        "jax": (
            trainer(
                "jax",
                tmp_path / "jax",
                "--num-processes",
                "2",
                "--process-id",
                "1",
                "--coordinator",
                f"localhost:{port}",
                "--dist-timeout",
                "1",
            ),
            {},
            "error: process 1 of 2 found no coordinator at --coordinator",
        ),
        "torch": (
            trainer("torch", tmp_path / "torch", "--dist-timeout", "1"),
            {"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
            "error: rank 1 of 2 could not join the run at 127.0.0.1:",
        ),
    }
    for framework, (command, env, message) in commands.items():
        start = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=STOP_BOUND, env={**os.environ, **env})
        assert done.returncode == 1 and time.monotonic() - start < STOP_BOUND, (framework, done.stderr[-3000:])
        assert done.stderr.strip().splitlines()[-1].startswith(message), (framework, done.stderr[-3000:])
        assert not (tmp_path / framework).exists()  # nothing written: rank 0 would have made the out-dir


def test_more_devices_than_visible_is_refused_in_one_line():
    from mnist_jax.parallel import make_mesh

    with pytest.raises(
        DeviceUnavailable,
        match=r"^--devices 2 was asked for, but JAX sees 1 cpu device in this process; "
        r"on the CPU, JAX_NUM_CPU_DEVICES=2 splits it into that many; lower --devices$",
    ):
        make_mesh("cpu", 2)
    assert len(make_mesh("cpu", 1).devices) == 1


def test_a_global_batch_must_split_evenly():
    assert per_device_batch(128, 2, "2 devices") == 64
    with pytest.raises(
        DistributedError,
        match=r"^--batch-size 100 does not split evenly over 3 processes; pass a multiple of 3 \(such as 99\)$",
    ):
        per_device_batch(100, 3, "3 processes")


def test_local_columns_split_every_batch_among_the_ranks():
    from mnist_common.batches import batch_order
    from mnist_torch.parallel import World, local_columns

    order = batch_order(0, 1, 1280, 128)
    parts = [local_columns(order, World(rank, 4)) for rank in range(4)]
    assert all(p.shape == (10, 32) for p in parts)
    assert np.array_equal(np.concatenate(parts, axis=1), order)  # together, the global batches in their order


@pytest.mark.gpu
def test_two_gpus_train_like_one(tmp_path):
    """On a machine with 2 or more GPUs: JAX's --devices 2 (the whole-epoch path, each GPU gathering its half
    of every batch) and torchrun with NCCL, each against its own one-GPU run. Not yet run on 2 GPUs (this
    project has been lent one at a time), so the bound is the loose 1e-3 that tests/test_parity.py allows
    between the frameworks, not a measured one: TF32 convolutions round more coarsely than the CPU's."""
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 or more CUDA GPUs; this machine has {torch.cuda.device_count()}")
    runs = {
        "jax": (
            trainer("jax", tmp_path / "jax1", "--device", "cuda"),
            trainer("jax", tmp_path / "jax2", "--devices", "2", "--device", "cuda"),
        ),
        "torch": (
            trainer("torch", tmp_path / "torch1", "--device", "cuda"),
            torchrun(tmp_path / "torch2", "--device", "cuda"),
        ),
    }
    for framework, (one, two) in runs.items():
        run(one)
        run(two)
        difference = weights_difference(tmp_path / f"{framework}1", tmp_path / f"{framework}2")
        print(f"{framework}, 2 GPUs against 1: largest relative weight difference {difference:.2e}")
        assert difference <= 1e-3, (framework, difference)
        assert json.loads((tmp_path / f"{framework}2" / "metrics.json").read_text())["parallel"]["devices"] == 2
