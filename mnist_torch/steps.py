"""The PyTorch trainer's training step: one SGD step, the execution modes that run it, and the choice among them.

`train_step` is the eager step. `compile_steps` prepares it in PyTorch's execution mode --mode: eager
as it is, its forward pass through `torch.compile`, or the whole step captured as a CUDA graph
(`CapturedStep`), and `Steps` is what `mnist_torch.train.train_epoch` calls. Every mode computes the
same SGD steps in the same order. Also here: the state the steps update (`TrainState`), which the
checkpoints save.

Also the state's creation (`create_state`), and evaluation and prediction over a whole split (`evaluate`,
`predict`). The machinery around them is apart: the device, deterministic settings and Inductor's cache in
`mnist_torch.runtime`, warm-up and CUDA-graph capture in `mnist_torch.cuda_graphs`.

Read it side by side with `mnist_jax/steps.py`: the names both define correspond, in the same order
(tests/test_architecture.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from mnist_common.config import EVAL_BATCH_SIZE, TrainConfig
from mnist_torch.cuda_graphs import CapturedStep, warm_up
from mnist_torch.data import Split
from mnist_torch.model import CNN
from mnist_torch.parallel import World, data_parallel
from mnist_torch.runtime import repair_inductor_cache

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 1, 28, 28) float, labels (N,) int64
Metrics = dict[str, torch.Tensor]


class TrainState(NamedTuple):
    """The model and optimizer that `train_step` updates in place, the dtype the step computes in, and
    the callable that runs the model's forward pass in training: the model itself, its
    DistributedDataParallel wrapper under torchrun, either through `torch.compile` with --mode compile.
    Evaluation, checkpoints and weights always use the plain `model`."""

    model: CNN
    optimizer: torch.optim.SGD
    compute_dtype: torch.dtype = torch.float32
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: the model


#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def create_state(seed: int, config: TrainConfig, device: torch.device) -> TrainState:
    """A freshly initialized model (PyTorch's default init, seeded), its SGD optimizer and the training compute
    dtype; conv1 in the form the run trains it in (`conv1_as_matmul_on`)."""
    torch.manual_seed(seed)
    model = CNN(conv1_as_matmul=conv1_as_matmul_on(config.mode, device)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return TrainState(model, optimizer, COMPUTE_DTYPES[config.precision])


def conv1_as_matmul_on(mode: str | None, device: torch.device) -> bool:
    """Whether the run computes conv1 as one matmul (`CNN(conv1_as_matmul=True)`): `--mode compile-step` on the
    CPU, where its whole-step graph trains faster that way, as JAX's CPU trainer does (benchmarks/RESULTS.md,
    "Tuning ledger"); in eager mode and under `--mode compile` the form was slower, and GPUs keep `nn.Conv2d`."""
    return mode == "compile-step" and device.type == "cpu"


def train_step(state: TrainState, batch: Batch) -> Metrics:
    """One SGD step on one batch, updating the model in place; returns the batch's mean loss (still on the device).

    In bf16 the forward pass runs under autocast, and so the backward pass in bfloat16 too; autocast
    computes the cross-entropy in float32, and the gradients reach the float32 weights as float32.
    """
    images, labels = batch
    state.optimizer.zero_grad(set_to_none=True)
    mixed = state.compute_dtype != torch.float32
    with torch.autocast(images.device.type, dtype=state.compute_dtype, enabled=mixed):
        forward = state.model if state.forward is None else state.forward
        loss = F.cross_entropy(forward(images), labels)
    loss.backward()
    state.optimizer.step()
    return {"loss": loss.detach()}


@torch.no_grad()
def eval_step(model: CNN, batch: Batch) -> Metrics:
    """Summed loss and correct count of one batch, so that batches of any size add up exactly."""
    images, labels = batch
    logits = model(images)
    return {
        "loss_sum": F.cross_entropy(logits, labels, reduction="sum"),
        "correct": (logits.argmax(dim=1) == labels).sum(),
    }


def evaluate(model: CNN, split: Split) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole split."""
    model.eval()
    sums = [
        eval_step(model, (split.images[i : i + EVAL_BATCH_SIZE], split.labels[i : i + EVAL_BATCH_SIZE]))
        for i in range(0, len(split.labels), EVAL_BATCH_SIZE)
    ]
    model.train()
    totals = {key: sum(s[key] for s in sums).item() for key in sums[0]}
    n = len(split.labels)
    return totals["loss_sum"] / n, totals["correct"] / n


@torch.no_grad()
def predict(model: CNN, images: torch.Tensor) -> np.ndarray:
    """Class probabilities (N, 10) of normalized images (N, 1, 28, 28), as a NumPy array on the host."""
    was_training = model.training
    model.eval()
    probabilities = [
        F.softmax(model(images[start : start + EVAL_BATCH_SIZE]), dim=1)
        for start in range(0, len(images), EVAL_BATCH_SIZE)
    ]
    model.train(was_training)
    return torch.cat(probabilities).cpu().numpy()


def sgd_step(state: TrainState, config: TrainConfig) -> Callable[..., tuple[torch.Tensor, list, list]]:
    """`train_step` as one pure function for `torch.compile(fullgraph=True)`: ``step(params, momenta, images,
    labels, idx)`` trains on the batch ``images[idx]`` and returns its loss and the new parameters and momentum
    buffers, touching none of its inputs: JAX's jitted step, in PyTorch.

    The gradient comes from `torch.func.grad_and_value` over `torch.func.functional_call`, and the update is
    torch.optim.SGD's maths written out (buf = momentum * buf + grad; p -= lr * buf), so forward, backward and
    update are one graph with no autograd engine or optimizer loop between them. A zero momentum buffer gives
    SGD's first step exactly (its buffer starts as the gradient).
    """
    model, compute_dtype = state.model, state.compute_dtype
    names = [name for name, _ in model.named_parameters()]
    lr, momentum = config.lr, config.momentum

    def loss(params: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mixed = compute_dtype != torch.float32
        with torch.autocast(images.device.type, dtype=compute_dtype, enabled=mixed):
            logits = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (images,))
            return F.cross_entropy(logits, labels)

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


#: What compile_steps did, for the line the trainer prints.
PREPARED = {
    "compile": "compiled the train step with torch.compile",
    "compile-step": "compiled the whole train step (forward, backward, SGD) with torch.compile(fullgraph=True)",
    "cuda-graphs": "captured the train step as a CUDA graph",
}

#: A training step ready to run on one batch's indices into the resident training set.
Step = Callable[[torch.Tensor], Metrics]


class Steps(NamedTuple):
    """The training step of one run, as `mnist_torch.train.train_epoch` calls it, with the training set and the
    ranks it runs on: one SGD step per call, on one batch's indices into the resident training set (eager,
    compiled or a CUDA graph)."""

    train: Split
    world: World
    single: Step

    def calls(self, order: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The epoch's (steps, batch) order cut into the rows of each call: one per call."""
        return order.split(1)

    def __call__(self, state: TrainState, rows: torch.Tensor) -> tuple[TrainState, torch.Tensor]:
        """Train on the batch `rows` (one of `calls`), updating `state` in place; returns it and the loss, still on
        the device."""
        return state, self.single(rows[0])["loss"][None]


def compile_steps(
    state: TrainState, train: Split, config: TrainConfig, world: World
) -> tuple[TrainState, Steps, float | None]:
    """The training step of PyTorch's execution mode `config.mode` on this rank's slice of each batch, and
    the seconds spent preparing it.

    eager: `train_step` as it is (nothing to prepare, None). compile: the forward pass through
    `torch.compile`, compiled now on one real batch, whose update is then undone, so that the
    compilation is timed apart from the epochs. cuda-graphs: the whole step captured as a CUDA graph
    (`CapturedStep`). Every mode computes the same SGD steps in the same order. Under
    torchrun the forward pass goes through DistributedDataParallel, which averages the gradients.
    """
    mode = config.mode  # None (a TrainConfig not from the command line): eager
    if mode == "cuda-graphs":
        captured = CapturedStep(train_step, state, train, config.batch_size)
        return state, Steps(train, world, captured), captured.capture_seconds
    if mode == "compile-step":
        repair_inductor_cache()
        # Channels-last memory (the parameters; the images have one channel): oneDNN's convolutions and Inductor's
        # fusions ran the whole step faster in it (benchmarks/RESULTS.md, "Tuning ledger"). The same Parameter
        # objects, so the optimizer and checkpoints still hold them.
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
        repair_inductor_cache()
        forward = torch.compile(forward)
    state = state._replace(forward=None if forward is state.model else forward)
    first = torch.arange(config.batch_size // world.size, device=train.images.device)

    def step(idx: torch.Tensor) -> Metrics:
        return train_step(state, (train.images[idx], train.labels[idx]))

    return state, Steps(train, world, step), warm_up(lambda: step(first), state, steps=1) if mode == "compile" else None
