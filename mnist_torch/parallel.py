"""Data parallelism with PyTorch's own machinery: `torch.distributed` processes started by `torchrun`, the
model wrapped in `DistributedDataParallel`.

Read it side by side with `mnist_jax/parallel.py`. Here data parallelism is processes: `torchrun
--nproc-per-node N -m mnist_torch.train` starts N copies of the trainer and tells each its rank through
the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); each joins the process group
(gloo on the CPU, NCCL on CUDA), takes its slice of every global batch, and DDP all-reduces (averages)
the gradients during the backward pass, so every rank applies the same SGD update to its own copy of
the model. Nothing here sums a gradient.

The global batch and its order are those of the one-process run (`mnist_torch.data.batch_order`): rank
r of N trains on columns [r*B/N, (r+1)*B/N) of every batch. The mean of the ranks' mean gradients over
equal slices is the gradient of the mean over the whole batch, so a run on N processes takes the same
SGD steps, apart from the order in which float32 sums are added.
"""

from __future__ import annotations

import datetime
import os
import signal
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mnist_torch.config import DistributedError, TrainConfig
from mnist_torch.files import first_line


class World(NamedTuple):
    """This process's place in the run: rank `rank` of `size`, `local_rank` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def launched_world() -> World:
    """This process's place as torchrun's environment gives it (RANK, WORLD_SIZE, LOCAL_RANK); one process without it."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))


def start_processes(config: TrainConfig, device_type: str) -> World:
    """Join the process group when `torchrun` (or anything that sets its environment) started this process;
    a plain ``python -m mnist_torch.train`` is one process and joins nothing.

    Every rank waits at most ``--dist-timeout`` seconds for the others at the rendezvous, and gloo
    bounds each collective by the same, so a rank whose peer vanished stops instead of hanging. When one
    rank fails, torchrun stops the others with SIGTERM: each then says so in one line (`stopped`).
    """
    world = launched_world()
    if world.size == 1:
        return world
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)  # one GPU per process, before NCCL starts
    try:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=datetime.timedelta(seconds=config.dist_timeout))
    except Exception as err:  # torch.distributed raises DistError subclasses or RuntimeError, by version
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        raise DistributedError(
            f"rank {world.rank} of {world.size} could not join the run at {where} within --dist-timeout "
            f"{config.dist_timeout} s ({first_line(err)}); start it with torchrun, every node with the same "
            f"--nnodes, --nproc-per-node and --master-addr/--master-port"
        ) from None
    signal.signal(signal.SIGTERM, lambda *_: stopped(world, config))
    return world


def stopped(world: World, config: TrainConfig) -> None:
    """SIGTERM's handler in a several-process run: stop this rank with one line instead of dying silently."""
    raise DistributedError(
        f"rank {world.rank} of {world.size} was stopped (SIGTERM): torchrun stops every rank when one fails, and its "
        f"report names the rank that did; the checkpoint of the last finished epoch in {config.out_dir} is whole: "
        "run the same torchrun command again with --resume"
    )


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


#: Words in the errors that a collective (or JAX's coordination service) raises when a peer process is gone.
LOST_PEER_SIGNS = ("Gloo", "gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe", "timed out", "Timed out",
                   "coordination service", "heartbeat")


def lost_process(err: Exception, world: World, config: TrainConfig) -> DistributedError | None:
    """What a collective's failure means in a several-process run, as one actionable line: another process
    of the run is gone (killed, crashed, or stopped on an error of its own). None for any other error."""
    if world.size == 1 or not any(sign in str(err) for sign in LOST_PEER_SIGNS):
        return None
    return DistributedError(
        f"rank {world.rank} of {world.size} lost another process of the run ({first_line(err)}); the checkpoint of "
        f"the last finished epoch in {config.out_dir} is whole: run the same torchrun command again with --resume"
    )

