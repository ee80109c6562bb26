"""Steps that run and leave no trace (`warm_up`), and PyTorch's CUDA-graph capture of the training step
(`CapturedStep`): the machinery `mnist_torch.steps.compile_steps` prepares its modes with.

CUDA graphs, PyTorch's fastest GPU path: the whole training step captured once and replayed per batch.
Eager PyTorch launches some 40 small kernels per SGD step of this network, each with Python and
dispatcher overhead on the host; at batch 128 an H100 finishes them faster than the host can issue
them. A CUDA graph records the launches of one step (gather of the batch, forward, backward, SGD
update) and replays them with one call, so the host cost is one launch per step. The price: every
tensor the graph touches lives at a fixed address, so the batch indices are copied into a static
buffer before each replay, and the parameters, gradients and momentum buffers are updated in place.

`torch.optim.SGD` needs no `capturable=True` (it has no such flag): it keeps no step count or other
state on the host, so its update captures as it is. It does create its momentum buffers on its first
step, and a graph cannot allocate them later, hence the warm-up steps before capture; `snapshot` and
`restore` then put the parameters and optimizer state back exactly as they were, so the run's first
step is still its first step. The same pair lets `torch.compile` compile on a real batch without
training on it.

JAX needs neither: `jax.jit` compiles from shapes alone (no real batch to undo), and the host cost per step that
CUDA graphs remove is what its whole-epoch call (`mnist_jax.steps.train_epoch_steps`) removes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import torch

from mnist_torch.data import Split

Metrics = dict[str, torch.Tensor]


class ModelAndOptimizer(Protocol):
    """What warm-up and capture read of the trainer's state (`mnist_torch.steps.TrainState`, a NamedTuple: read-only
    fields, hence properties)."""

    @property
    def model(self) -> torch.nn.Module: ...

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...


#: Steps run on a side stream before capture: they create SGD's momentum buffers, cuBLAS and cuDNN
#: handles and workspaces, and autograd's lazily built state (PyTorch's own examples use three).
WARMUP_STEPS = 3

Snapshot = tuple[list[torch.Tensor], dict[torch.Tensor, dict[str, torch.Tensor]]]


def snapshot(state: ModelAndOptimizer) -> Snapshot:
    """Copies of the model's parameters and buffers and of the optimizer's tensors (SGD: momentum buffers)."""
    model = [t.detach().clone() for t in state.model.state_dict().values()]
    optimizer = {
        p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in state.optimizer.state.items()
    }
    return model, optimizer


@torch.no_grad()
def restore(state: ModelAndOptimizer, saved: Snapshot) -> None:
    """Put `saved` back in place, into the very tensors a captured graph reads and writes.

    Optimizer tensors created after the snapshot (the momentum buffers of a fresh run) are zeroed:
    SGD's first step sets the buffer to the gradient, and with zero dampening the next steps compute
    momentum * buffer + gradient, which for a zero buffer is that same gradient, bit for bit.
    """
    model, optimizer = saved
    for tensor, copy in zip(state.model.state_dict().values(), model, strict=True):
        tensor.copy_(copy)
    for param, param_state in state.optimizer.state.items():
        for key, value in param_state.items():
            if not torch.is_tensor(value):
                continue
            if key in optimizer.get(param, {}):
                value.copy_(optimizer[param][key])
            else:
                value.zero_()


def warm_up(run: Callable[[], object], state: ModelAndOptimizer, steps: int) -> float:
    """Run `steps` training steps for their side effects (compilation, allocation), then undo their
    updates with `restore`; returns the seconds they took, once the device has finished."""
    saved = snapshot(state)
    start = time.perf_counter()
    for _ in range(steps):
        run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    restore(state, saved)
    return seconds


class CapturedStep:
    """One SGD step on the resident training set, captured as a CUDA graph: ``step(idx)`` trains on
    the images ``train.images[idx]`` (idx: the batch's indices, on the GPU) and returns its loss.

    `train_step` is the eager step to capture; the state is updated in place, as in eager mode.
    """

    def __init__(self, train_step: Callable[..., Metrics], state: ModelAndOptimizer, train: Split, batch_size: int):
        device = train.images.device
        if device.type != "cuda":
            raise ValueError(
                f"CUDA graphs need the training data on a CUDA device, got {device}; use eager or compiled steps"
            )
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=device)  # static: replays read the indices here
        # The graph holds raw addresses, not references: the data and state it reads must live as long as it does,
        # or the caching allocator hands their memory to the next tensor and replays read garbage.
        self.train, self.state = train, state

        def run() -> Metrics:
            return train_step(state, (train.images[self.idx], train.labels[self.idx]))

        start = time.perf_counter()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
            warm_up(run, state, WARMUP_STEPS)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records the kernels of one step; runs none of them
            self.loss = run()["loss"]
        torch.cuda.synchronize(device)
        self.capture_seconds = time.perf_counter() - start

    def __call__(self, idx: torch.Tensor) -> Metrics:
        self.idx.copy_(idx)
        self.graph.replay()
        return {"loss": self.loss.clone()}  # the next replay overwrites self.loss
