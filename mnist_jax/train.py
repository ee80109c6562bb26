"""Train the Flax CNN: optax SGD with momentum on cross-entropy, jit-compiled, evaluated on the test set each epoch.

Usage: python -m mnist_jax.train [--epochs 10] [--batch-size 128] [--lr 0.1] [--momentum 0.9] [--api linen] ...

Writes into --out-dir: metrics.json, a checkpoint after every epoch (`--resume` continues
from it), weights.safetensors, and the plots curves.png, confusion.png, misclassified.png.

--api picks the Flax API the step is written in: Linen (this mirror's), or Flax NNX's functional or
stateful route (`mnist_jax.steps_nnx`); checkpoints, metrics.json and weights are the same in each.

Data parallel: ``--devices N`` trains on N devices of this process, and ``--num-processes`` joins several
processes through `jax.distributed` (`mnist_jax.parallel`); every global batch is split among the devices.

Read it side by side with `mnist_torch/train.py`: the same public names in the same order
(tests/test_architecture.py), and the training steps in `mnist_jax/steps.py`.
The framework differences: the training state is an immutable pytree that `train_step`
returns anew instead of mutating, randomness is an explicit key, the steps are
compiled ahead of time so that compilation is timed apart from training, and data
parallelism is a matter of where arrays are placed (the steps do not change).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Check the command line before the imports below load JAX and PyTorch (seconds, 1 GB): a bad flag or a
    # path that cannot work then fails at once, with argparse's usage and one error line (exit status 2).
    from mnist_common import interrupts
    from mnist_common.cli import check_command_line

    interrupts.install("python -m mnist_jax.train")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("train", "jax", sys.argv[1:])  # parsed once: main runs what was checked

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mnist_common import interrupts
from mnist_common.batches import batch_order
from mnist_common.cli import parse_config
from mnist_common.config import TrainConfig, per_device_batch
from mnist_common.errors import ProjectError
from mnist_common.outdir import claim, out_dir_lock, record_earlier, write_failure
from mnist_common.profiling import StepWindow
from mnist_common.progress import EpochProgress, progress_enabled
from mnist_common.report import EpochRecord
from mnist_common.run import Run
from mnist_jax.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mnist_jax.compilation_cache import count_cache_lookups, describe_lookups, use_compilation_cache
from mnist_jax.data import Split, load_mnist
from mnist_jax.parallel import (
    describe,
    describe_device,
    fail,
    is_writer,
    lost_process,
    make_mesh,
    place,
    replicated,
    start_processes,
)
from mnist_jax.profiling import capture
from mnist_jax.runtime import deterministic, resolve_device, start_backends, versions
from mnist_jax.steps import TrainState, evaluate, predict
from mnist_jax.tuned import IN_FLIGHT, Steps, compile_steps, create_state, epoch_per_call
from mnist_jax.weights import export_weights


def epoch_order(config: TrainConfig, epoch: int, num_examples: int) -> np.ndarray:
    """The epoch's batches in the shared order (`batch_order`), as one (steps, batch) int32 array."""
    return batch_order(config.seed, epoch, num_examples, config.batch_size).astype(np.int32)


def train_epoch(
    state: TrainState,
    train: Split,
    config: TrainConfig,
    epoch: int,
    steps: Steps,
    profile: Path | None = None,
) -> tuple[TrainState, np.ndarray]:
    """One pass in the shared batch order; returns the new state and every step's loss, on the host, once the
    device has finished.

    `steps.calls` cuts the epoch into the calls of the compiled steps (`mnist_jax.tuned.Steps`), which hold
    the training set and the mesh: a whole epoch per call on an accelerator, FUSED_STEPS steps per call on the
    CPU, every batch split among the devices; in every --api the epoch runs on the API's own form of the state
    (`steps.start`), turned back into the `TrainState` once (`steps.finish`). The losses stay on the device until
    the epoch ends (reading each would make the host wait for every step instead of queueing the next), with at
    most IN_FLIGHT calls queued ahead, so that an interrupt waits for those alone, and the progress bar (a terminal
    only) reads the latest one every few steps, not every step. `profile` (--profile) captures a few of the calls
    with JAX's profiler.
    """
    order = epoch_order(config, epoch, len(train.labels))
    state = steps.start(state)  # the --api's own form of the state (Linen's: the TrainState itself)
    losses: list[jax.Array] = []
    calls = steps.calls(order)
    window = StepWindow(profile, len(calls), capture)
    with (
        EpochProgress(len(order), epoch, config.epochs, config.batch_size, progress_enabled(config.quiet)) as progress,
        window,
    ):
        for index, rows in enumerate(calls):
            window.before(index, len(rows))
            state, loss = steps(state, rows)
            window.after(index, loss.block_until_ready)
            losses.append(loss)
            if len(losses) > IN_FLIGHT:  # JAX queues calls without bound: wait for the one IN_FLIGHT calls ago
                losses[-1 - IN_FLIGHT].block_until_ready()
            for k in range(len(rows)):
                progress.step(lambda loss=loss, k=k: float(loss[k]))
    if window.done and not config.quiet:
        print(window.describe(), flush=True)
    return steps.finish(state), np.asarray(jnp.concatenate(losses))


def params_finite(params: Any) -> bool:
    return bool(jax.tree.reduce(jnp.logical_and, jax.tree.map(lambda p: jnp.isfinite(p).all(), params)))


def train(config: TrainConfig) -> list[EpochRecord]:
    config = config.for_framework("jax")  # metrics.json names the API that ran
    with deterministic(not config.nondeterministic):
        start_processes(config)  # jax.distributed, before any backend starts; nothing for one process
        start_backends()  # JAX_PLATFORMS naming an absent platform: one line
        device = resolve_device(config.device)
        mesh = make_mesh(device.platform, config.devices)  # the run's devices, every process's, as one mesh
        writer = is_writer()  # process 0 writes the run's files; every process computes every step
        if writer:  # what an interrupt keeps, said from before the lock is taken
            record_earlier(config)
        with out_dir_lock(config.out_dir, "python -m mnist_jax.train") if writer else contextlib.nullcontext():
            return _train(config, mesh, device)


def _train(config: TrainConfig, mesh: Mesh, device: jax.Device) -> list[EpochRecord]:
    cache_dir = use_compilation_cache()
    per_device_batch(config.batch_size, mesh.size, f"{mesh.size} devices")
    writer = is_writer()
    if not writer:  # one progress bar and one report per run: process 0's
        config = dataclasses.replace(config, quiet=True)
    earlier = claim(config, "jax") if writer else []  # a run already there: resumed, replaced, or refused
    interrupts.now("while loading the MNIST data")
    data = load_mnist(config.data_dir)
    train_host = Split(data.train.images[: config.train_size], data.train.labels[: config.train_size])
    # An accelerator keeps the training set resident (each device gathers its share of every batch);
    # the CPU path gathers the batches in host memory and sends each device its part.
    train_split = Split(*place(tuple(train_host), replicated(mesh))) if epoch_per_call(device) else train_host
    test_host = Split(data.test.images[: config.test_size], data.test.labels[: config.test_size])
    test_split = Split(*place(tuple(test_host), replicated(mesh)))  # every device evaluates all of it
    with jax.default_device(device):
        state = place(create_state(config.seed, config, device), replicated(mesh))
    records: list[EpochRecord] = []
    if config.resume:
        state, records = load_checkpoint(config.out_dir, state, config)  # restored onto the same devices
        interrupts.kept(f"the checkpoint after epoch {len(records)} in {checkpoint_path(config.out_dir)}")
    interrupts.now("during compilation")  # before the line below, so that an interrupt after it is named truly
    if config.resume and not config.quiet:
        print(f"resumed from {config.out_dir} after epoch {len(records)}", flush=True)
    if config.api == "linen":
        prepare = compile_steps
    else:  # Flax NNX's steps (--api nnx-*), loaded when asked for: flax.nnx adds a third of a second to every start
        from mnist_jax.steps_nnx import compile_steps as prepare
    with count_cache_lookups() as lookups:
        state, steps, compile_seconds = prepare(state, train_split, config, mesh)
    if not config.quiet:
        print(
            f"compiled train and eval steps ({steps.describe()}, {describe_device(mesh)}) in {compile_seconds:.2f}s "
            f"({describe_lookups(lookups, cache_dir)})",
            flush=True,
        )
    compilation_cache = {"dir": None if cache_dir is None else str(cache_dir), **lookups}
    parallel = describe(mesh)
    with Run(
        config, "jax", writer, earlier, records, str(device), versions(), compile_seconds, parallel, compilation_cache
    ) as run:
        for epoch in run.epochs():
            start = time.perf_counter()
            state, losses = train_epoch(state, train_split, config, epoch, steps, run.profile(epoch))
            seconds = time.perf_counter() - start
            run.check(epoch, losses, params_finite(state.params))
            test_loss, test_accuracy = evaluate(state.params, test_split)
            save = functools.partial(save_checkpoint, config.out_dir, state, run.records, config)
            run.end_epoch(epoch, losses, test_loss, test_accuracy, seconds, save)
    run.finishing()
    predictions = predict(state.params, test_split.images).argmax(axis=1)  # a computation on every process's devices
    run.finish(
        functools.partial(export_weights, state.params),
        test_host.images,
        test_host.labels,
        predictions,
        describe_device(mesh),
    )
    return run.records


def main(argv: Sequence[str] | None = None, checked: TrainConfig | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    config = checked or parse_config("jax", argv)
    try:
        with interrupts.catching():
            train(config)
    except interrupts.Interrupted as err:  # the out-dir's lock is released and no partial file is left
        interrupts.report(err, interrupts.resume_command("mnist_jax.train", sys.argv[1:] if argv is None else argv))
    except ProjectError as err:  # the project's own errors: their message is the whole line
        fail(f"error: {err}", config)
    except OSError as err:  # the out-dir's disk is full, read-only, or not a folder
        fail(f"error: {write_failure(err, config.out_dir)}", config)
    except Exception as err:
        if (known := lost_process(err, config)) is None:
            raise
        fail(f"error: {known}", config)


if __name__ == "__main__":
    main(checked=CHECKED)
