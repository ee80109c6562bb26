"""Train the CNN in PyTorch: SGD with momentum on cross-entropy, evaluated on the test set after each epoch.

Usage: python -m mnist_torch.train [--epochs 10] [--batch-size 128] [--lr 0.1] [--momentum 0.9] [--mode eager] ...

Writes into --out-dir: metrics.json, a checkpoint after every epoch (`--resume` continues
from it), weights.safetensors, and the plots curves.png, confusion.png, misclassified.png.

The loop of the lesson: the model is `mnist_torch/model.py`, the step `mnist_torch/steps.py`. The trainer runs the
step in PyTorch's execution mode --mode, in its tuned forms (`mnist_torch/tuned.py`).
Data parallel: ``torchrun --nproc-per-node N -m mnist_torch.train`` (DistributedDataParallel) splits every batch.

Read it side by side with `mnist_jax/train.py`: the same names in the same order (tests/test_architecture.py).
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
    # Check the command line before the imports below load the frameworks (seconds, about 1 GB): a bad flag or a
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
from mnist_common.config import TrainConfig
from mnist_common.outdir import claim, out_dir_lock, record_earlier
from mnist_common.profiling import StepWindow
from mnist_common.progress import EpochProgress, progress_enabled
from mnist_common.report import EpochRecord
from mnist_common.run import Run
from mnist_torch.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from mnist_torch.data import Split, load_mnist
from mnist_torch.model import CNN
from mnist_torch.parallel import describe, describe_device, fail, is_writer, replicate
from mnist_torch.profiling import capture
from mnist_torch.runtime import deterministic, failure, prepare_steps, preparing, processes, versions
from mnist_torch.steps import TrainState, evaluate, predict
from mnist_torch.tuned import Steps, create_state, place_splits
from mnist_torch.weights import export_weights

FRAMEWORK = "torch"  # what this trainer names itself in its files and messages


def train_epoch(
    state: TrainState,
    train: Split,
    config: TrainConfig,
    epoch: int,
    steps: Steps,
    profile: Path | None = None,
) -> tuple[TrainState, np.ndarray]:
    """One pass in the shared batch order; returns the state after it and every step's loss, on the host.

    `steps` runs the epoch's calls on the devices (`tuned.Steps`: one SGD step or several per call). The losses
    stay on the device until the epoch ends, so that the host never waits for a step, and the progress bar (a
    terminal only) reads the latest one every few steps. `profile` (--profile) captures a few of the calls.
    """
    state = steps.start(state)  # the state as the steps take it (the --api's own form in JAX)
    losses = []
    order = batch_order(config.seed, epoch, len(train.labels), config.batch_size)
    calls = steps.calls(order)
    window = StepWindow(profile, len(calls), functools.partial(capture, device_type=steps.device_type))
    with (
        EpochProgress(len(order), epoch, config.epochs, config.batch_size, progress_enabled(config.quiet)) as progress,
        window,
    ):
        for index, rows in enumerate(calls):
            window.before(index, len(rows))
            state, loss = steps(state, rows)
            window.after(index, functools.partial(steps.wait, loss))
            losses.append(loss)
            steps.bound(losses)  # how many calls may queue ahead of the one running
            for k in range(len(rows)):
                progress.step(lambda loss=loss, k=k: float(loss[k]))
    if window.done and not config.quiet:
        print(window.describe(), flush=True)
    return steps.finish(state), steps.host_losses(losses)


def params_finite(model: CNN) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def train(config: TrainConfig) -> list[EpochRecord]:
    config = config.for_framework(FRAMEWORK)  # metrics.json names the --mode or --api that ran
    with contextlib.ExitStack() as run_context:  # left in reverse order: the lock, the processes, the settings
        run_context.enter_context(deterministic(not config.nondeterministic))
        world, device = run_context.enter_context(processes(config))
        writer = is_writer(world)  # rank 0 writes the run's files; every process computes every step
        if writer:  # what an interrupt keeps, said from before the lock is taken
            record_earlier(config)
            run_context.enter_context(out_dir_lock(config.out_dir, f"python -m mnist_{FRAMEWORK}.train"))
        else:  # one progress bar and one report per run: rank 0's
            config = dataclasses.replace(config, quiet=True)
        earlier = claim(config, FRAMEWORK) if writer else []  # a run already there: resumed, replaced, or refused
        interrupts.now("while loading the MNIST data")
        train_split, test_host, test_split = place_splits(load_mnist(config.data_dir), config, device)
        state = replicate(create_state(config.seed, config, device), world)
        records: list[EpochRecord] = []
        if config.resume:
            state, records = load_checkpoint(config.out_dir, state, config)  # restored onto the same devices
            interrupts.kept(f"the checkpoint after epoch {len(records)} in {checkpoint_path(config.out_dir)}")
        interrupts.now(preparing(config))  # before the line below, so that an interrupt after it is named truly
        if config.resume and not config.quiet:
            print(f"resumed from {config.out_dir} after epoch {len(records)}", flush=True)
        state, steps, prepared = prepare_steps(state, train_split, config, world)
        if not config.quiet and prepared.line is not None:
            print(prepared.line, flush=True)
        where, parallel = describe_device(device, world), describe(world)
        with Run(config, FRAMEWORK, writer, earlier, records, str(device), versions(), prepared, parallel) as run:
            for epoch in run.epochs():
                start = time.perf_counter()
                state, losses = train_epoch(state, train_split, config, epoch, steps, run.profile(epoch))
                seconds = time.perf_counter() - start
                run.check(epoch, losses, params_finite(state.model))
                test_loss, test_accuracy = evaluate(state.model, test_split)
                save = functools.partial(save_checkpoint, config.out_dir, state, run.records, config)
                run.end_epoch(epoch, losses, test_loss, test_accuracy, seconds, save)
        run.finishing()
        predictions = predict(state.model, test_split.images).argmax(axis=1)  # the same on every process
        run.finish(
            functools.partial(export_weights, state.model), test_host.images, test_host.labels, predictions, where
        )
        return run.records


def main(argv: Sequence[str] | None = None, checked: TrainConfig | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    config = checked or parse_config(FRAMEWORK, argv)
    try:
        with interrupts.catching():
            train(config)
    except interrupts.Interrupted as err:  # the out-dir's lock is released and no partial file is left
        interrupts.report(err, resume_command(argv))
    except Exception as err:  # a closed stdout (`| head -1`) first: its BrokenPipeError is no disk's fault
        if (message := interrupts.output_closed(err, resume_command(argv)) or failure(err, config)) is None:
            raise  # a bug: its traceback
        fail(f"error: {message}")


def resume_command(argv: Sequence[str] | None) -> str:
    """The command that continues this run, for the line of a run that stopped early (`interrupts`)."""
    return interrupts.resume_command(f"mnist_{FRAMEWORK}.train", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main(checked=CHECKED)
