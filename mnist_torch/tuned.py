"""The forms that win the PyTorch trainer its speed, each tied to the lesson (`mnist_torch.model`, `mnist_torch.steps`).

Every form here is a row of the tuning ledger, and docs/design.md gives each name's measurement; tests/test_tuned.py
and tests/test_parity.py check each against the lesson: the same parameters in, the same logits and gradients out.
The trainer's --mode picks among them; every mode computes the lesson's SGD steps in its order.
Mirrors `mnist_jax/tuned.py`: the names both define correspond, in the same order (tests/test_architecture.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from mnist_common.config import TrainConfig
from mnist_torch.data import MNISTData, Split
from mnist_torch.model import CNN, check_images
from mnist_torch.parallel import World, data_parallel, global_mean, local_columns
from mnist_torch.steps import COMPUTE_DTYPES, Metrics, TrainState, cross_entropy, train_step


def _patches(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 neighbourhoods of a one-channel batch (N, 1, H, W), zero-padded, as rows of (N * H * W, 10): the nine
    taps in the kernel's (kh, kw) order, then a column of ones for the bias (`mnist_jax.tuned._patches`'s)."""
    n, _, h, w = x.shape
    padded = F.pad(x[:, 0], (1, 1, 1, 1))
    taps = [padded[:, dh : dh + h, dw : dw + w] for dh in range(3) for dw in range(3)]
    return torch.stack([*taps, torch.ones_like(taps[0])], dim=-1).reshape(n * h * w, 10)


class Conv1AsMatmul(torch.autograd.Function):
    """conv1 (padding 1, one input channel) as one matmul, [patches | 1] x [kernel; bias], its kernel and bias
    gradients one more, the output channels-last: oneDNN's one-channel convolution and bias reduction are mostly
    memory passes. No gradient for the input: the images need none. Ledger: conv1 as one matmul."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        weights = torch.cat([weight.reshape(-1, 9).t(), bias[None]])  # (10, features)
        return (_patches(x) @ weights).reshape(n, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # torch.func needs forward and setup_context apart
        x, weight, _ = inputs
        ctx.save_for_backward(x)
        ctx.weight_shape = weight.shape

    @staticmethod
    def backward(ctx, cotangent: torch.Tensor):
        if ctx.needs_input_grad[0]:
            raise NotImplementedError("conv1_as_matmul computes no gradient for its input (the images need none)")
        (x,) = ctx.saved_tensors
        rows = cotangent.permute(0, 2, 3, 1).reshape(-1, cotangent.shape[1])  # (N * H * W, features)
        both = _patches(x).t() @ rows  # (10, features): the kernel's nine taps, then the bias
        return None, both[:9].t().reshape(ctx.weight_shape), both[9]


class TunedCNN(CNN):
    """`mnist_torch.model.CNN`, its parameters and maths, with conv1 as one matmul (`Conv1AsMatmul`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        x = F.avg_pool2d(F.relu(Conv1AsMatmul.apply(x, self.conv1.weight, self.conv1.bias)), 2)
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def conv1_as_matmul_on(mode: str | None, device: torch.device) -> bool:
    """conv1 as one matmul in `--mode compile-step` on the CPU, where the whole step trains faster so; eager and
    `--mode compile` run the lesson's model as written, and GPUs keep `nn.Conv2d` until a GPU run measures it."""
    return mode == "compile-step" and device.type == "cpu"


def create_state(seed: int, config: TrainConfig, device: torch.device) -> TrainState:
    """The lesson's state (`mnist_torch.steps.create_state`), its model a `TunedCNN` where `conv1_as_matmul_on`."""
    torch.manual_seed(seed)
    model = (TunedCNN if conv1_as_matmul_on(config.mode, device) else CNN)().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return TrainState(model, optimizer, COMPUTE_DTYPES[config.precision])


def sgd_step(state: TrainState, config: TrainConfig) -> Callable[..., tuple[torch.Tensor, list, list]]:
    """`train_step` as one pure function for `torch.compile(fullgraph=True)`, JAX's jitted step in PyTorch:
    ``step(params, momenta, images, labels, idx)`` returns the loss of ``images[idx]``, the new parameters and
    momentum buffers, touching none of its inputs; torch.optim.SGD's update written out. Ledger: the whole step."""
    model, compute_dtype = state.model, state.compute_dtype
    names = [name for name, _ in model.named_parameters()]
    lr, momentum = config.lr, config.momentum

    def loss(params: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mixed = compute_dtype != torch.float32
        with torch.autocast(images.device.type, dtype=compute_dtype, enabled=mixed):
            logits = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (images,))
            return cross_entropy(logits, labels)

    grad_and_loss = torch.func.grad_and_value(loss)

    def step(params, momenta, images, labels, idx) -> tuple[torch.Tensor, list, list]:
        grads, value = grad_and_loss(list(params), images[idx], labels[idx])
        momenta = [momentum * buf + grad for buf, grad in zip(momenta, grads, strict=True)]
        return value.detach(), [p - lr * buf for p, buf in zip(params, momenta, strict=True)], momenta

    return step


def momentum_buffers(state: TrainState) -> list[torch.Tensor]:
    """The optimizer's momentum buffer of every parameter, created (zero) where SGD has made none yet, so that
    `sgd_step` starts from the buffers a checkpoint saved, or from SGD's first step."""
    with torch.no_grad():
        for param in state.model.parameters():
            entry = state.optimizer.state[param]
            if entry.get("momentum_buffer") is None:
                entry["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return [state.optimizer.state[p]["momentum_buffer"] for p in state.model.parameters()]


@torch.no_grad()
def adopt(state: TrainState, params: list[torch.Tensor], momenta: list[torch.Tensor]) -> None:
    """Make `sgd_step`'s new tensors the model's parameters and the optimizer's momentum buffers: the Parameter
    objects stay (the optimizer and checkpoints hold them), their data is swapped, no byte is copied."""
    for param, new, buf in zip(state.model.parameters(), params, momenta, strict=True):
        param.data = new
        state.optimizer.state[param]["momentum_buffer"] = buf


#: Steps run on a side stream before capture: they create SGD's momentum buffers, cuBLAS and cuDNN
#: handles and workspaces, and autograd's lazily built state (PyTorch's own examples use three).
WARMUP_STEPS = 3

Snapshot = tuple[list[torch.Tensor], dict[torch.Tensor, dict[str, torch.Tensor]]]


def snapshot(state: TrainState) -> Snapshot:
    """Copies of the model's parameters and buffers and of the optimizer's tensors (SGD: momentum buffers)."""
    model = [t.detach().clone() for t in state.model.state_dict().values()]
    optimizer = {
        p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in state.optimizer.state.items()
    }
    return model, optimizer


@torch.no_grad()
def restore(state: TrainState, saved: Snapshot) -> None:
    """Put `saved` back into the very tensors a captured graph reads and writes; momentum buffers made since are
    zeroed, from which SGD's next step is its first, bit for bit."""
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


def warm_up(run: Callable[[], object], state: TrainState, steps: int) -> float:
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
    """The eager `train_step` captured as a CUDA graph and replayed per batch, one launch instead of some 40 kernels:
    ``step(idx)`` trains on ``train.images[idx]`` in place and returns its loss. Ledger: a CUDA graph of the step."""

    def __init__(self, train_step: Callable[..., Metrics], state: TrainState, train: Split, batch_size: int):
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


#: A training step ready to run on one batch's indices into the resident training set.
Step = Callable[[torch.Tensor], Metrics]


def place_splits(data: MNISTData, config: TrainConfig, device: torch.device) -> tuple[Split, Split, Split]:
    """The run's training split resident on `device`, where each step gathers its batch; the test split on the host
    and on `device` (every rank evaluates all of it)."""
    train = Split(data.train.images[: config.train_size].to(device), data.train.labels[: config.train_size].to(device))
    test = Split(data.test.images[: config.test_size], data.test.labels[: config.test_size])
    return train, test, Split(test.images.to(device), test.labels.to(device))


def _same(state: TrainState) -> TrainState:
    return state


class Steps(NamedTuple):
    """The training step of one run, as `mnist_torch.train.train_epoch` calls it, with the training set and the
    ranks it runs on: one SGD step per call, on one batch's indices into the resident training set (eager,
    compiled or a CUDA graph), updating the state in place (`start` and `finish` leave it as it is)."""

    train: Split
    world: World
    single: Step
    start: Callable[[TrainState], TrainState] = _same
    finish: Callable[[TrainState], TrainState] = _same

    @property
    def device_type(self) -> str:
        return self.train.images.device.type

    def calls(self, order: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The epoch's (steps, batch) order, this rank's columns of it on the device, cut into one step per call."""
        return torch.as_tensor(local_columns(order, self.world)).to(self.train.images.device).split(1)

    def __call__(self, state: TrainState, rows: torch.Tensor) -> tuple[TrainState, torch.Tensor]:
        """Train on the batch `rows` (one of `calls`), updating `state` in place; returns it and the loss, still on
        the device."""
        return state, self.single(rows[0])["loss"][None]

    def wait(self, loss: torch.Tensor) -> None:
        """Until the device has computed `loss`."""
        loss.cpu()

    def bound(self, losses: list[torch.Tensor]) -> None:
        """Nothing to bound: a CPU step runs before the call returns, and CUDA's launch queue bounds a GPU's."""

    def host_losses(self, losses: list[torch.Tensor]) -> np.ndarray:
        """The epoch's losses of the global batches (averaged over the ranks), on the host."""
        return global_mean(torch.cat(losses), self.world).cpu().numpy()


def compile_steps(
    state: TrainState, train: Split, config: TrainConfig, world: World
) -> tuple[TrainState, Steps, float | None]:
    """The training step of --mode `config.mode` on this rank's slice of each batch, and the seconds spent preparing
    it (None for eager). compile and compile-step compile on a real batch whose update is undone, so that
    compilation is timed apart from the epochs; under torchrun DistributedDataParallel averages the gradients."""
    mode = config.mode  # None (a TrainConfig not from the command line): eager
    if mode == "cuda-graphs":
        captured = CapturedStep(train_step, state, train, config.batch_size)
        return state, Steps(train, world, captured), captured.capture_seconds
    if mode == "compile-step":
        # Channels-last parameters, the same Parameter objects: the whole step ran faster so. Ledger: channels-last.
        state.model.to(memory_format=torch.channels_last)
        compiled = torch.compile(sgd_step(state, config), fullgraph=True)
        momentum_buffers(state)

        def whole_step(idx: torch.Tensor) -> Metrics:
            params = [p.detach() for p in state.model.parameters()]
            loss, params, momenta = compiled(params, momentum_buffers(state), train.images, train.labels, idx)
            adopt(state, params, momenta)
            return {"loss": loss}

        first = torch.arange(config.batch_size, device=train.images.device)
        return state, Steps(train, world, whole_step), warm_up(lambda: whole_step(first), state, steps=1)
    forward = data_parallel(state.model, world, train.images.device)
    if mode == "compile":
        forward = torch.compile(forward)
    state = state._replace(forward=None if forward is state.model else forward)
    first = torch.arange(config.batch_size // world.size, device=train.images.device)

    def step(idx: torch.Tensor) -> Metrics:
        return train_step(state, (train.images[idx], train.labels[idx]))

    return state, Steps(train, world, step), warm_up(lambda: step(first), state, steps=1) if mode == "compile" else None
