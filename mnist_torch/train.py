"""Train the reference CNN: SGD with momentum on CrossEntropyLoss, evaluated on the test set each epoch.

Usage: python -m mnist_torch.train [--epochs 10] [--batch-size 128] [--lr 0.1] [--momentum 0.9] [--resume] ...

Writes into --out-dir: metrics.json, a checkpoint after every epoch (`--resume` continues
from it), weights.safetensors, and the plots curves.png, confusion.png, misclassified.png.

Data parallel: ``torchrun --nproc-per-node N -m mnist_torch.train`` trains on N processes with
DistributedDataParallel (`mnist_torch.parallel`); every global batch is split among them.

Read it side by side with `mnist_jax/train.py`: the same public names in the same order
(tests/test_architecture.py), with only the framework differences between them; the training
step and its execution modes are in `mnist_torch/steps.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __name__ == "__main__":
    # Check the command line before the imports below load PyTorch (seconds, about 1 GB): a bad flag or a
    # path that cannot work then fails at once, with argparse's usage and one error line (exit status 2).
    from mnist_common import interrupts
    from mnist_common.cli import check_command_line

    interrupts.install("python -m mnist_torch.train")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("train", "torch", sys.argv[1:])  # parsed once: main runs what was checked

import numpy as np
import torch

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
from mnist_torch.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mnist_torch.data import Split, load_mnist
from mnist_torch.model import CNN
from mnist_torch.parallel import (
    World,
    describe,
    describe_device,
    fail,
    finish,
    global_mean,
    is_writer,
    local_columns,
    lost_process,
    start_processes,
)
from mnist_torch.profiling import capture
from mnist_torch.runtime import check_mode, damaged_kernel, deterministic, resolve_device, versions
from mnist_torch.steps import TrainState, evaluate, predict
from mnist_torch.tuned import PREPARED, Steps, compile_steps, create_state
from mnist_torch.weights import export_weights


def epoch_order(config: TrainConfig, epoch: int, num_examples: int, world: World) -> np.ndarray:
    """The epoch's batches in the shared order (`batch_order`), as one (steps, batch) array: this rank's
    slice of every batch under torchrun."""
    return local_columns(batch_order(config.seed, epoch, num_examples, config.batch_size), world)


def train_epoch(
    state: TrainState,
    train: Split,
    config: TrainConfig,
    epoch: int,
    steps: Steps,
    profile: Path | None = None,
) -> tuple[TrainState, np.ndarray]:
    """One pass in the shared batch order; returns the state (updated in place) and every step's loss, on the host,
    once the device has finished.

    `steps.calls` cuts the epoch into the calls of the prepared step (`mnist_torch.tuned.Steps`), which holds
    the training set and the ranks: one SGD step each. The epoch's batch order goes to the device once, as one
    (steps, batch) index tensor, and each step gathers its batch there. The losses stay on the device until
    the epoch ends (reading each would make the host wait for every step), then are averaged over the ranks into
    the global batches' losses, and the progress bar (a terminal only) reads the latest one every few steps, not
    every step. `profile` (--profile) captures a few of the calls with PyTorch's profiler.
    """
    order = torch.from_numpy(epoch_order(config, epoch, len(train.labels), steps.world)).to(train.images.device)
    losses: list[torch.Tensor] = []
    calls = steps.calls(order)
    window = StepWindow(profile, len(calls), lambda folder: capture(folder, train.images.device.type))
    with (
        EpochProgress(len(order), epoch, config.epochs, config.batch_size, progress_enabled(config.quiet)) as progress,
        window,
    ):
        for index, rows in enumerate(calls):
            window.before(index, len(rows))
            state, loss = steps(state, rows)
            window.after(index, loss.cpu)
            losses.append(loss)
            for k in range(len(rows)):
                progress.step(lambda loss=loss, k=k: float(loss[k]))
    if window.done and not config.quiet:
        print(window.describe(), flush=True)
    return state, global_mean(torch.cat(losses), steps.world).cpu().numpy()


def params_finite(model: CNN) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def train(config: TrainConfig) -> list[EpochRecord]:
    config = config.for_framework("torch")  # metrics.json names the mode that ran
    with deterministic(not config.nondeterministic):
        device = resolve_device(config.device)
        world = start_processes(config, device.type)  # torch.distributed under torchrun; nothing for one process
        try:
            check_mode(config, device, world.size)  # a --mode that cannot run here: one line, before any work
            writer = is_writer(world)  # rank 0 writes the run's files; every rank computes every step
            if writer:  # what an interrupt keeps, said from before the lock is taken
                record_earlier(config)
            with out_dir_lock(config.out_dir, "python -m mnist_torch.train") if writer else contextlib.nullcontext():
                return _train(
                    config,
                    world,
                    torch.device("cuda", world.local_rank) if world.size > 1 and device.type == "cuda" else device,
                )
        finally:
            finish(world)


def _train(config: TrainConfig, world: World, device: torch.device) -> list[EpochRecord]:
    per_device_batch(config.batch_size, world.size, f"{world.size} processes")
    writer = is_writer(world)
    if not writer:  # one progress bar and one report per run: process 0's
        config = dataclasses.replace(config, quiet=True)
    earlier = claim(config, "torch") if writer else []  # a run already there: resumed, replaced, or refused
    interrupts.now("while loading the MNIST data")
    data = load_mnist(config.data_dir)
    train_split = Split(
        data.train.images[: config.train_size].to(device), data.train.labels[: config.train_size].to(device)
    )
    test_host = Split(data.test.images[: config.test_size], data.test.labels[: config.test_size])
    test_split = Split(test_host.images.to(device), test_host.labels.to(device))  # every rank evaluates all of it
    state = create_state(config.seed, config, device)
    records: list[EpochRecord] = []
    if config.resume:
        state, records = load_checkpoint(config.out_dir, state, config)
        interrupts.kept(f"the checkpoint after epoch {len(records)} in {checkpoint_path(config.out_dir)}")
    interrupts.now(  # before the line below, so that an interrupt after it is named truly
        "during compilation" if config.mode in ("compile", "compile-step") else "while preparing the train step"
    )
    if config.resume and not config.quiet:
        print(f"resumed from {config.out_dir} after epoch {len(records)}", flush=True)
    state, steps, compile_seconds = compile_steps(state, train_split, config, world)
    if not config.quiet and compile_seconds is not None:
        print(f"{PREPARED[config.mode]} in {compile_seconds:.2f}s", flush=True)
    parallel = describe(world)
    with Run(config, "torch", writer, earlier, records, str(device), versions(), compile_seconds, parallel) as run:
        for epoch in run.epochs():
            start = time.perf_counter()
            state, losses = train_epoch(state, train_split, config, epoch, steps, run.profile(epoch))
            seconds = time.perf_counter() - start
            run.check(epoch, losses, params_finite(state.model))
            test_loss, test_accuracy = evaluate(state.model, test_split)
            save = functools.partial(save_checkpoint, config.out_dir, state, run.records, config)
            run.end_epoch(epoch, losses, test_loss, test_accuracy, seconds, save)
    run.finishing()
    predictions = predict(state.model, test_split.images).argmax(axis=1)  # every rank's model is the same
    run.finish(
        functools.partial(export_weights, state.model),
        test_host.images.numpy(),
        test_host.labels.numpy(),
        predictions,
        describe_device(device, world),
    )
    return run.records


def main(argv: Sequence[str] | None = None, checked: TrainConfig | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    config = checked or parse_config("torch", argv)
    try:
        with interrupts.catching():
            train(config)
    except interrupts.Interrupted as err:  # the out-dir's lock is released and no partial file is left
        interrupts.report(err, interrupts.resume_command("mnist_torch.train", sys.argv[1:] if argv is None else argv))
    except ProjectError as err:  # the project's own errors: their message is the whole line
        fail(f"error: {err}")
    except OSError as err:  # the out-dir's disk is full, read-only, or not a folder
        fail(f"error: {write_failure(err, config.out_dir)}")
    except Exception as err:
        if (known := lost_process(err, config) or damaged_kernel(err)) is None:
            raise
        fail(f"error: {known}")


if __name__ == "__main__":
    main(checked=CHECKED)
