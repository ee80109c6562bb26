"""The trainers' execution paths compute the same SGD steps: JAX's whole-epoch scan against its per-step
jit, PyTorch's warm-up-and-restore (used before torch.compile and CUDA-graph capture) against no warm-up,
torch.compile against eager; and the CPU-only compiler options of JAX's training steps degrade gracefully.
The CUDA-graph step itself needs a GPU: tests/test_gpu.py."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from mnist_common.batches import batch_order
from mnist_common.config import TrainConfig
from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_jax.parallel import make_mesh
from mnist_torch import steps as torch_steps_module
from mnist_torch import train as torch_train
from mnist_torch.tuned import warm_up
from tests.numerics import relative_error

SMALL = TrainConfig(batch_size=32, train_size=384)  # 12 SGD steps per epoch


def jax_train_split(jax_mnist, size: int):
    return jax_train.Split(jax_mnist.train.images[:size], jax_mnist.train.labels[:size])


def test_jax_whole_epoch_scan_equals_the_per_step_path(jax_mnist):
    """The GPU trainer's path (one rolled scan per epoch, batches gathered on the device) against one
    jitted call per step, on the CPU: 12 steps from the same state, in the same order.

    The scan's body is compiled on its own, and XLA:CPU runs convolutions inside a loop with other
    kernels (benchmarks/RESULTS.md), so the sums are ordered differently: equal up to float32 rounding,
    amplified a little by 12 momentum steps at lr 0.1 (measured: parameters 3.5e-7, losses 1.0e-7)."""
    train = jax_train_split(jax_mnist, SMALL.train_size)
    order = batch_order(SMALL.seed, 1, SMALL.train_size, SMALL.batch_size).astype(np.int32)
    assert order.shape == (12, 32) and order.dtype == np.int32

    epoch_state, metrics = jax_tuned.train_epoch_steps(jax_tuned.create_state(0, SMALL), tuple(train), order)
    step_state, losses = jax_tuned.create_state(0, SMALL), []
    for idx in order:
        step_state, m = jax_steps.train_step(step_state, (train.images[idx], train.labels[idx]))
        losses.append(float(m["loss"]))

    assert relative_error(losses, metrics["loss"]) < 1e-5
    for expected, actual in zip(jax.tree.leaves(step_state.params), jax.tree.leaves(epoch_state.params), strict=True):
        assert relative_error(expected, actual) < 1e-5
    assert int(epoch_state.step) == 12


def test_jax_trainer_compiles_fused_steps_on_one_cpu_and_cuts_the_epoch_into_their_calls(jax_mnist):
    """On one CPU device `compile_steps` compiles FUSED_STEPS unrolled steps per call plus the single step for the
    remainder, not the epoch scan (the accelerators' path), and `Steps.calls` covers every batch once, in order."""
    cpu = jax.devices("cpu")[0]
    assert not jax_tuned.epoch_per_call(cpu)
    mesh = make_mesh("cpu", 1)
    train = jax_train_split(jax_mnist, SMALL.train_size)
    state = jax_tuned.create_state(0, SMALL, cpu)
    same, steps, seconds = jax_tuned.compile_steps(state, train, SMALL, mesh)
    assert same is state and steps.train is train and steps.mesh is mesh
    assert steps.epoch is None and steps.fused is not None and steps.single is not None and seconds > 0
    assert steps.describe() == f"Linen, {jax_tuned.FUSED_STEPS} unrolled steps per call"
    order = np.arange(37 * 4, dtype=np.int32).reshape(37, 4)  # 37 steps: two fused calls of 16, then 5 single steps
    calls = steps.calls(order)
    assert [len(rows) for rows in calls] == [jax_tuned.FUSED_STEPS] * 2 + [1] * 5
    np.testing.assert_array_equal(np.concatenate(calls), order)
    assert jax_tuned.Steps(train, mesh, epoch=len).calls(order)[0] is order  # the accelerators' path: an epoch at once
    assert jax_tuned.Steps(train, mesh, epoch=len).describe() == "Linen, a whole epoch per call"
    assert [len(rows) for rows in jax_tuned.Steps(train, mesh, single=len).calls(order)] == [1] * 37  # several CPUs


def test_an_xla_without_the_cpu_options_compiles_without_them_and_says_so(jax_mnist, capsys):
    """The CPU compiler options tune one XLA version; a version that no longer knows one must still train."""
    state = jax_tuned.create_state(0, SMALL)
    batch = (jax_mnist.train.images[:32], jax_mnist.train.labels[:32])
    compiled = jax_tuned.compile_train(jax_steps.train_step.lower(state, batch), "cpu", {"xla_cpu_no_such_option": "1"})
    err = capsys.readouterr().err
    assert (
        "does not accept the compiler options ['xla_cpu_no_such_option']; compiling the training steps without them"
        in err
    )
    _, metrics = compiled(state, batch)
    assert np.isfinite(float(metrics["loss"]))


def test_the_cpu_options_are_accepted_by_this_xla_and_turn_its_ynnpack_fusions_off(jax_mnist, capsys):
    """The shipped CPU options reach XLA: its default compilation of the training step holds YNNPACK fusions (45 in
    jaxlib 0.10.2), the trainer's holds none, and no note says an option was dropped."""
    state = jax_tuned.create_state(0, SMALL)
    lowered = jax_steps.train_step.lower(state, (jax_mnist.train.images[:32], jax_mnist.train.labels[:32]))
    shipped = jax_tuned.compile_train(lowered, "cpu").as_text()
    assert "does not accept" not in capsys.readouterr().err
    assert "ynn_fusion" in lowered.compile().as_text()  # what the option exists to turn off
    assert "ynn_fusion" not in shipped


def torch_steps(state, mnist, steps: int, start: int = 0) -> list[float]:
    order = batch_order(SMALL.seed, 1, SMALL.train_size, SMALL.batch_size)[start : start + steps]
    return [
        torch_steps_module.train_step(state, (mnist.train.images[i], mnist.train.labels[i]))["loss"].item()
        for i in order
    ]


def assert_same_state(expected, actual) -> None:
    for a, b in zip(expected.model.state_dict().values(), actual.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    buffers = [[s["momentum_buffer"] for s in st.optimizer.state.values()] for st in (expected, actual)]
    for a, b in zip(*buffers, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


@pytest.mark.parametrize("trained_before", [0, 2], ids=["fresh", "mid-run"])
def test_torch_warm_up_leaves_no_trace(mnist, trained_before):
    """Warm-up steps before torch.compile or CUDA-graph capture are undone exactly: training afterwards is
    bit for bit training without them, from a fresh state (momentum buffers created by the warm-up are
    zeroed) and from one mid-run (the buffers are put back)."""
    cpu = torch.device("cpu")
    plain, warmed = (torch_steps_module.create_state(0, SMALL, cpu) for _ in range(2))
    torch_steps(plain, mnist, trained_before)
    torch_steps(warmed, mnist, trained_before)
    seconds = warm_up(lambda: torch_steps(warmed, mnist, 1, start=7), warmed, steps=3)
    assert seconds > 0
    buffers = [s["momentum_buffer"] for s in warmed.optimizer.state.values()]
    assert len(buffers) == 4 * 2  # the warm-up created every momentum buffer (a graph cannot create them later)
    assert all(b.count_nonzero() == 0 for b in buffers) == (trained_before == 0)
    warmed_losses = torch_steps(warmed, mnist, 5, start=trained_before)
    plain_losses = torch_steps(plain, mnist, 5, start=trained_before)
    assert warmed_losses == plain_losses
    assert_same_state(plain, warmed)


@pytest.mark.e2e  # a longer real run: Inductor compiles its C++ kernels first, tens of seconds on 2 cores
def test_torch_compiled_modes_train_like_eager(tmp_path):
    """`--mode compile` and `--mode compile-step` run the same SGD steps as eager (Inductor may fuse and reorder
    float32 sums, and compile-step computes conv1 as a matmul: measured equal to the 4 decimals printed, losses
    within 1e-6 relative)."""
    records = {
        mode: torch_train.train(TrainConfig(epochs=1, train_size=1280, mode=mode, out_dir=tmp_path / mode, quiet=True))[
            0
        ]
        for mode in ("eager", "compile", "compile-step")
    }
    for mode in ("compile", "compile-step"):
        assert records[mode].train_loss == pytest.approx(records["eager"].train_loss, rel=1e-5), mode
        assert records[mode].test_accuracy == pytest.approx(records["eager"].test_accuracy, abs=2e-4), mode


def test_torch_cuda_graphs_mode_needs_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: --mode cuda-graphs is valid here (tests/test_gpu.py)")
    with pytest.raises(
        SystemExit,
        match=r"^error: --mode cuda-graphs captures CUDA graphs and needs a CUDA GPU, but this run is on cpu; "
        r"use --mode eager or --mode compile, or --device cuda on a machine with a GPU$",
    ):
        torch_train.main(["--mode", "cuda-graphs", "--epochs", "1", "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_a_kernel_damaged_otherwise_than_the_repair_sees_is_named_with_the_folder_to_remove():
    """Inductor's "file too short" (a compiled kernel cut short) is answered by one line naming Inductor's cache
    folder, which a user can remove; any other error is not taken for it."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from mnist_torch.runtime import damaged_kernel

    line = damaged_kernel(RuntimeError("InductorError: /tmp/x/ab.so: file too short\n  (90 more lines)"))
    assert line == (
        "torch.compile read a damaged compiled kernel from Inductor's cache (InductorError: /tmp/x/ab.so: file too "
        f"short); remove the folder {cache_dir()} (a cache: it is rebuilt) and run again"
    )
    assert damaged_kernel(RuntimeError("CUDA out of memory")) is None


@pytest.mark.parametrize("mode", ["compile-step", "cuda-graphs"])
def test_torch_whole_step_modes_are_refused_under_torchrun_before_any_work(mode):
    """A whole-step mode has no DistributedDataParallel to average the gradients: with several processes it is
    refused in one line (`check_mode`, called before the out-dir is touched), on any device."""
    from mnist_common.config import DistributedError
    from mnist_torch.runtime import check_mode

    with pytest.raises(DistributedError, match=rf"^--mode {mode} compiles one process's whole step, .* with several"):
        check_mode(TrainConfig(mode=mode), torch.device("cuda"), 2)
    check_mode(TrainConfig(mode=mode), torch.device("cuda"), 1)  # one process: allowed
    check_mode(TrainConfig(mode="compile"), torch.device("cpu"), 2)  # DDP under torch.compile: allowed
