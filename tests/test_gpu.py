"""The GPU paths, on a GPU: PyTorch's CUDA-graph step and JAX's whole-epoch scan against their plain
counterparts, and both trainers' GPU defaults end to end. Skipped, with the reason, without a CUDA GPU;
`bash benchmarks/gpu_run.sh` runs them first on a GPU machine (`pytest -m gpu`)."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from mnist_common.batches import batch_order
from mnist_common.config import TrainConfig
from mnist_jax import steps as jax_steps
from mnist_jax import tuned as jax_tuned
from mnist_torch import steps as torch_steps
from mnist_torch import train as torch_train
from mnist_torch import tuned as torch_tuned
from mnist_torch.tuned import CapturedStep
from tests.numerics import relative_error

STEPS = 20
CONFIG = TrainConfig(device="cuda")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch"),
]


def jax_gpu() -> jax.Device:
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus:
        pytest.skip("JAX sees no GPU (install its CUDA plugin: `pip install -e .[cuda]`)")
    return gpus[0]


def order(steps: int = STEPS):
    return batch_order(CONFIG.seed, 1, 60_000, CONFIG.batch_size).astype(np.int32)[:steps]


@pytest.mark.parametrize("precision, bound", [("float32", 1e-3), ("bf16", 2e-2)])
def test_cuda_graph_steps_equal_eager_steps(mnist, precision, bound):
    """The captured step replays the eager step: 20 SGD steps from the same weights give the same losses
    and parameters. Not bit for bit: cuDNN may pick other kernels inside a capture, and its weight-gradient
    kernels sum in a nondeterministic order; the bounds allow that rounding (float32 here is PyTorch's
    default, TF32 convolutions), amplified by 20 momentum steps at lr 0.1. Measured on an H200
    (2026-11-26): parameters 1.25e-4 apart in float32, losses under 1e-4; bf16 within 2e-2."""
    cuda = torch.device("cuda")
    config = TrainConfig(device="cuda", precision=precision)
    train = torch_train.Split(mnist.train.images.to(cuda), mnist.train.labels.to(cuda))
    idx = torch.from_numpy(order()).to(cuda).long()

    eager = torch_tuned.create_state(0, config, cuda)
    eager_losses = [torch_steps.train_step(eager, (train.images[i], train.labels[i]))["loss"].item() for i in idx]
    graphed = torch_tuned.create_state(0, config, cuda)
    step = CapturedStep(torch_steps.train_step, graphed, train, config.batch_size)
    graph_losses = [step(i)["loss"].item() for i in idx]

    assert relative_error(eager_losses, graph_losses) < bound
    for a, b in zip(eager.model.state_dict().values(), graphed.model.state_dict().values(), strict=True):
        assert relative_error(a.cpu(), b.cpu()) < bound
    assert graph_losses[-1] < 0.8 * graph_losses[0]  # it trained (bf16, H200: 2.30 -> 1.51 in 20 steps)


def test_cuda_graph_keeps_what_it_reads_alive(mnist):
    """A captured step built from a Split its caller drops (as the benchmark suite did) still replays on that
    data: the caller's copy freed and its memory handed to other tensors (filled with -1) changes nothing."""
    cuda = torch.device("cuda")
    idx = torch.from_numpy(order(5)).to(cuda).long()
    resident = torch_train.Split(mnist.train.images.to(cuda), mnist.train.labels.to(cuda))
    eager = torch_tuned.create_state(0, CONFIG, cuda)
    eager_losses = [torch_steps.train_step(eager, (resident.images[i], resident.labels[i]))["loss"].item() for i in idx]

    graphed = torch_tuned.create_state(0, CONFIG, cuda)
    step = CapturedStep(
        torch_steps.train_step,
        graphed,
        torch_train.Split(resident.images.clone(), resident.labels.clone()),
        CONFIG.batch_size,
    )
    clutter = [torch.full_like(resident.images, -1.0), torch.full_like(resident.labels, -1)]  # reuses any freed blocks
    graph_losses = [step(i)["loss"].item() for i in idx]
    del clutter
    assert relative_error(eager_losses, graph_losses) < 1e-3


def test_jax_epoch_scan_equals_per_step_jit_on_the_gpu(jax_mnist):
    device = jax_gpu()
    assert jax_tuned.epoch_per_call(device)
    with jax.default_matmul_precision("float32"):
        train = jax.device_put((jax_mnist.train.images, jax_mnist.train.labels), device)
        idx = order()
        scanned, metrics = jax_tuned.train_epoch_steps(
            jax.device_put(jax_tuned.create_state(0, CONFIG), device), train, idx
        )
        state, losses = jax.device_put(jax_tuned.create_state(0, CONFIG), device), []
        for i in idx:
            state, m = jax_steps.train_step(state, (train[0][i], train[1][i]))
            losses.append(float(m["loss"]))
    assert relative_error(losses, metrics["loss"]) < 1e-4
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(scanned.params), strict=True):
        assert relative_error(a, b) < 1e-4


@pytest.mark.parametrize(
    "framework, argv", [("jax", []), ("torch", ["--mode", "cuda-graphs"]), ("torch", ["--mode", "eager"])]
)
def test_trainers_train_on_the_gpu(framework, argv, tmp_path):
    """Two epochs of 6 400 images on cuda, through each trainer's GPU path: it learns, and says which path."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            f"mnist_{framework}.train",
            "--device",
            "cuda",
            "--epochs",
            "2",
            "--train-size",
            "6400",
            "--out-dir",
            str(tmp_path),
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda")
    assert metrics["test_accuracy"] > 0.85
    if framework == "jax":
        assert "a whole epoch per call" in result.stdout
    if argv == ["--mode", "cuda-graphs"]:
        assert "captured the train step as a CUDA graph" in result.stdout
