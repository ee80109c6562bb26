"""The scaling benchmark's command lines, every row: the GPU command's dry run trains one row (jax_processes), since
the e2e tests of tests/test_data_parallel.py train each engine's 2-process or 2-device run on the CPU already; here
each row's launch (torchrun, JAX's processes, JAX's devices) is checked without starting it, against the trainers'
own parser."""

from __future__ import annotations

import sys

import pytest

from benchmarks.test_scaling import ROWS, commands
from mnist_common.cli import parse_config

FLAGS = ["--epochs", "2", "--train-size", "512", "--device", "cpu", "--quiet", "--out-dir", "runs/scaling"]


@pytest.mark.parametrize("variant, processes, devices", ROWS, ids=[f"{v}-{p}x{d}" for v, p, d in ROWS])
def test_each_scaling_row_launches_its_engine_with_flags_the_trainer_takes(variant, processes, devices):
    argvs = commands(variant, processes, devices, "cpu", FLAGS)
    framework = "torch" if variant == "torch_ddp" else "jax"
    if variant == "torch_ddp" and processes > 1:
        (argv,) = argvs
        assert argv[:8] == [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "mnist_torch.train",
        ]
        trainer_argvs = [argv[8:]]
    else:
        assert len(argvs) == processes
        assert all(argv[:3] == [sys.executable, "-m", f"mnist_{framework}.train"] for argv in argvs)
        trainer_argvs = [argv[3:] for argv in argvs]
    for argv in trainer_argvs:
        config = parse_config(framework, argv)
        assert (config.epochs, config.train_size, config.device) == (2, 512, "cpu")
        if framework == "jax":
            assert config.devices == devices
    if variant == "jax_processes":
        configs = [parse_config("jax", argv) for argv in trainer_argvs]
        assert [c.process_id for c in configs] == list(range(processes))
        assert {c.num_processes for c in configs} == {processes} and len({c.coordinator for c in configs}) == 1
