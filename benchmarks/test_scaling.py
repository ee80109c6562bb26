"""Data-parallel scaling: each framework's trainer on 1 and 2 devices or processes, images/s and efficiency.

Every row runs the real command a user would type, in a subprocess, with the global batch of 128 fixed
(strong scaling: 2 devices take 64 images each of every batch, and the SGD steps are those of one device):
- ``torch_ddp``: ``python -m mnist_torch.train`` (1 process), then ``torchrun --nproc-per-node 2`` (DDP, gloo);
- ``jax_devices``: ``python -m mnist_jax.train --devices 1`` then ``--devices 2`` (one process, a 2-device mesh);
- ``jax_processes``: 2 processes joined by `jax.distributed` (gloo), one device each, against the 1-device run.

On the CPU every process and every device computes on one thread (OMP_NUM_THREADS=1 for PyTorch, XLA's
Eigen thread pool off for JAX), so 2 devices can at best double the throughput of 1 on a 2-core
machine, and the efficiency (images/s on N over N times images/s on 1) says how much of that the
collectives and the smaller per-device batches keep. The rate of a run is the median of its epochs
after the first (epoch times exclude compilation and evaluation). On CUDA the rows need 2 or more
GPUs and skip with the reason otherwise. Nothing asserts a time.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys

import pytest

from benchmarks.conftest import environment

#: One thread per process and per device on the CPU (see the docstring).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}
#: (variant, processes, devices per process).
ROWS = [("torch_ddp", 1, 1), ("torch_ddp", 2, 1), ("jax_devices", 1, 1), ("jax_devices", 1, 2), ("jax_processes", 2, 1)]
EPOCHS, TRAIN_SIZE = 3, 12_800  # 100 steps per epoch at batch 128
SMOKE_EPOCHS, SMOKE_TRAIN_SIZE = 2, 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def commands(variant: str, processes: int, devices: int, device: str, flags: list[str]) -> list[list[str]]:
    """The command line(s) of one run: one per process for jax_processes, else one."""
    if variant == "torch_ddp":
        if processes == 1:
            return [[sys.executable, "-m", "mnist_torch.train", *flags]]
        return [
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(processes),
                "-m",
                "mnist_torch.train",
                *flags,
            ]
        ]
    jax = [sys.executable, "-m", "mnist_jax.train", *flags, "--devices", str(devices)]
    if processes == 1:
        return [jax]
    coordinator = f"localhost:{free_port()}"
    return [
        [*jax, "--num-processes", str(processes), "--process-id", str(i), "--coordinator", coordinator]
        for i in range(processes)
    ]


def run_processes(argvs: list[list[str]], env: dict[str, str]) -> None:
    running = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for argv in argvs
    ]
    outputs = [p.communicate(timeout=1200) for p in running]
    for p, (_, stderr) in zip(running, outputs):
        assert p.returncode == 0, stderr[-3000:]


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.parametrize("variant, processes, devices", ROWS, ids=[f"{v}-{p}x{d}" for v, p, d in ROWS])
def test_scaling(benchmark, variant, processes, devices, device, smoke, tmp_path):
    if device == "cuda" and visible_gpus() < 2:
        pytest.skip(f"data-parallel rows need 2 or more GPUs; this machine has {visible_gpus()}")
    epochs, train_size = (SMOKE_EPOCHS, SMOKE_TRAIN_SIZE) if smoke else (EPOCHS, TRAIN_SIZE)
    flags = [
        "--epochs",
        str(epochs),
        "--train-size",
        str(train_size),
        "--device",
        device,
        "--quiet",
        "--out-dir",
        str(tmp_path),
    ]
    env = {**os.environ, **(ONE_THREAD if device == "cpu" else {})}
    if variant == "jax_devices" and device == "cpu":
        env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices}"
    benchmark.group = f"scaling {device} batch 128 float32"
    benchmark.pedantic(
        run_processes, args=(commands(variant, processes, devices, device, flags), env), rounds=1, iterations=1
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parallel"] == {"processes": processes, "devices": processes * devices}  # the run that was asked for
    rates = [e["images_per_s"] for e in metrics["epochs"][1:]]
    benchmark.extra_info.update(
        framework=variant.split("_")[0],
        variant=variant,
        mode="scaling",
        device=device,
        batch_size=128,
        precision="float32",
        processes=processes,
        devices=processes * devices,
        images_per_s=statistics.median(rates),
        threads_per_device=1 if device == "cpu" else None,
        test_accuracy=metrics["test_accuracy"],
        **environment(device),
    )
