"""Data parallelism with PyTorch's own machinery: `torch.distributed` processes started by `torchrun`, the
model wrapped in `DistributedDataParallel`.

Read it side by side with `mnist_jax/parallel.py`. Here data parallelism is processes: `torchrun
--nproc-per-node N -m mnist_torch.train` starts N copies of the trainer and tells each its rank through
the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); each joins the process group
(gloo on the CPU, NCCL on CUDA), takes its slice of every global batch, and DDP all-reduces (averages)
the gradients during the backward pass, so every rank applies the same SGD update to its own copy of
the model. Nothing here sums a gradient.

The global batch and its order are those of the one-process run (`mnist_common.batches.batch_order`): rank
r of N trains on columns [r*B/N, (r+1)*B/N) of every batch. The mean of the ranks' mean gradients over
equal slices is the gradient of the mean over the whole batch, so a run on N processes takes the same
SGD steps, apart from the order in which float32 sums are added.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
from typing import Any, NamedTuple, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mnist_common import interrupts
from mnist_common.config import DistributedError, TrainConfig
from mnist_common.files import first_line
from mnist_common.parallel import LOST_PEER_SIGNS, exit_on_interrupt, first_difference, last_word, run_settings


class World(NamedTuple):
    """This process's place in the run: rank `rank` of `size`, `local_rank` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def launched_world() -> World:
    """This process's place as torchrun's environment gives it (RANK, WORLD_SIZE, LOCAL_RANK); one process without
    it."""
    return World(
        int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    )


def start_processes(config: TrainConfig, device_type: str) -> World:
    """Join the process group when `torchrun` (or anything that sets its environment) started this process;
    a plain ``python -m mnist_torch.train`` is one process and joins nothing.

    Every rank waits at most ``--dist-timeout`` seconds for the others at the rendezvous, and gloo
    bounds each collective by the same, so a rank whose peer vanished stops instead of hanging. When one
    rank fails, torchrun stops the others with SIGTERM: each then says so in one line (`stopped`), as SIGINT
    does (`interrupted`); both stop the rank at once (`exit_on_interrupt`). Once joined, the ranks compare their flags
    (`check_same_flags`) before anything is written or computed.
    """
    world = launched_world()
    if world.size == 1:
        return world
    exit_on_interrupt(
        lambda signum: stopped(world, config) if signum == signal.SIGTERM else interrupted(world, config, signum),
        interrupts.SIGNALS,
    )
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)  # one GPU per process, before NCCL starts
    try:
        dist.init_process_group(
            "nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=config.dist_timeout)
        )
    except Exception as err:  # torch.distributed raises DistError subclasses or RuntimeError, by version
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(
            f"rank {world.rank} of {world.size} could not join the run at {where} within --dist-timeout "
            f"{config.dist_timeout} s ({first_line(err)}); start it with torchrun, every node with the same "
            f"--nnodes, --nproc-per-node and --master-addr/--master-port"
        ) from None
    check_same_flags(config, world)
    return world


def stopped(world: World, config: TrainConfig) -> str:
    """The line a rank of a several-process run prints when SIGTERM stops it (`exit_on_interrupt`): torchrun's
    way of stopping the other ranks when one fails. Said by the watcher thread, not raised in the main thread,
    whose unwinding may be inside a collective or autograd's engine when the signal comes."""
    return (
        f"error: rank {world.rank} of {world.size} was stopped (SIGTERM): "
        "torchrun stops every rank when one fails, and its "
        f"report names the rank that did; the checkpoint of the last finished epoch in {config.out_dir} is whole: "
        "run the same torchrun command again with --resume"
    )


def interrupted(world: World, config: TrainConfig, signum: int) -> str:
    """The line a rank of a several-process run prints when SIGINT (or another signal but SIGTERM) stops it
    (`exit_on_interrupt`)."""
    return (
        f"error: rank {world.rank} of {world.size} was interrupted ({signal.Signals(signum).name}); the other ranks "
        "stop too; the checkpoint "
        f"of the last finished epoch in {config.out_dir} is whole: run the same torchrun command again with --resume"
    )


def check_same_flags(config: TrainConfig, world: World) -> None:
    """Before any step: every rank's `run_settings` gathered in every rank (`all_gather_object`), and a
    DistributedError in every rank, naming the first difference, when they are not the same. torchrun
    gives every worker of a node the same arguments, but each node's torchrun is started on its own."""
    if world.size == 1:
        return
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, run_settings(config))
    difference = first_difference(gathered, "rank", "start the torchrun of every node with the same flags")
    if difference is not None:
        # Every rank leaves here with this line. The first to exit makes torchrun SIGTERM the others: they are
        # leaving already, and must not say instead that they were stopped (`stopped`).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        dist.destroy_process_group()
        raise DistributedError(difference)


def data_parallel(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: `model` wrapped in DistributedDataParallel in a several-process
    run (which broadcasts rank 0's parameters once, then all-reduces the gradients in every backward
    pass), `model` itself in a one-process run. Evaluation, checkpoints and weights use `model`."""
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def local_columns(order: np.ndarray, world: World) -> np.ndarray:
    """This rank's slice of every batch of an epoch's (steps, batch) order: the same global batches,
    split among the ranks (the batch size was checked to split evenly)."""
    per_rank = order.shape[1] // world.size
    return order[:, world.rank * per_rank : (world.rank + 1) * per_rank]


def global_mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The mean over the ranks of `values` (each rank's per-step mean losses): the global batches' losses."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)  # a sum; gloo has no average
    return values / world.size


def replicate(state: Any, world: World) -> Any:
    """The trainer's state as every rank holds it: each made the same model from the same seed on its own device,
    and DistributedDataParallel keeps them equal, so nothing moves."""
    return state


def is_writer(world: World) -> bool:
    """Whether this process writes the run's files: rank 0 alone, as in JAX's process 0."""
    return world.rank == 0


def describe(world: World) -> dict[str, int]:
    """For metrics.json: how many processes and devices trained (one device per process; the same keys as JAX's)."""
    return {"processes": world.size, "devices": world.size}


def finish(world: World) -> None:
    """Leave the process group at the end of a run (each process; nothing for one process)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def lost_process(err: Exception, config: TrainConfig) -> DistributedError | None:
    """What a collective's failure means in a several-process run, as one actionable line: another process
    of the run is gone (killed, crashed, or stopped on an error of its own). None for any other error."""
    world = launched_world()
    if world.size == 1 or not any(sign in str(err) for sign in LOST_PEER_SIGNS):
        return None
    return DistributedError(
        f"rank {world.rank} of {world.size} lost another process of the run ({first_line(err)}); the checkpoint of "
        f"the last finished epoch in {config.out_dir} is whole: run the same torchrun command again with --resume"
    )


def describe_device(device: torch.device, world: World) -> str:
    """`cpu` for one process, `2 processes (gloo), cpu` under torchrun."""
    return (
        str(device) if world.size == 1 else f"{world.size} processes ({torch.distributed.get_backend()}), {device.type}"
    )


def fail(message: str) -> NoReturn:
    """Exit with `message` (status 1), unless, in a several-process run, a signal's line is being said
    (`mnist_common.parallel.last_word`): then wait the moment it takes that one to end the process, so that
    a rank says one line, not two. One process (and a test calling `main` again and again) just exits."""
    if launched_world().size > 1 and not last_word():
        threading.Event().wait()
    sys.exit(message)
