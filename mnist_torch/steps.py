"""The PyTorch training step as a user writes it first: the state, the loss, one eager SGD step, evaluation.

Read it side by side with `mnist_jax/steps.py`: the same names in the same order (tests/test_architecture.py).
The trainer runs this step in PyTorch's execution modes (--mode) and the faster forms of `mnist_torch.tuned`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from mnist_common.config import EVAL_BATCH_SIZE, TrainConfig
from mnist_torch.data import Split
from mnist_torch.model import CNN

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, 1, 28, 28) float, labels (N,) int64
Metrics = dict[str, torch.Tensor]


#: --precision's compute dtype of the training steps (the parameters stay float32).
COMPUTE_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


class TrainState(NamedTuple):
    """The model and optimizer that `train_step` updates in place, the dtype the step computes in, and what runs the
    forward pass in training (None: the model; else its DistributedDataParallel or `torch.compile` wrapper)."""

    model: CNN
    optimizer: torch.optim.SGD
    compute_dtype: torch.dtype = torch.float32
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None


def create_state(seed: int, config: TrainConfig, device: torch.device) -> TrainState:
    """A fresh model from PyTorch's default init, seeded, on `device`, and SGD with momentum."""
    torch.manual_seed(seed)
    model = CNN().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    return TrainState(model, optimizer, COMPUTE_DTYPES[config.precision])


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The batch's mean cross-entropy; under autocast PyTorch computes it in float32."""
    return F.cross_entropy(logits, labels)


def train_step(state: TrainState, batch: Batch) -> Metrics:
    """One SGD step on one batch, updating the model in place; returns the batch's mean loss (still on the device).
    In bf16 the forward and backward passes run under autocast; the gradients reach the weights as float32."""
    images, labels = batch
    state.optimizer.zero_grad(set_to_none=True)
    mixed = state.compute_dtype != torch.float32
    with torch.autocast(images.device.type, dtype=state.compute_dtype, enabled=mixed):
        forward = state.model if state.forward is None else state.forward
        loss = cross_entropy(forward(images), labels)
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


@torch.no_grad()
def predict_step(model: CNN, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities of one batch."""
    return F.softmax(model(images), dim=1)


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


def predict(model: CNN, images: torch.Tensor) -> np.ndarray:
    """Class probabilities (N, 10) of normalized images (N, 1, 28, 28), as a NumPy array on the host."""
    was_training = model.training
    model.eval()
    probabilities = [
        predict_step(model, images[start : start + EVAL_BATCH_SIZE]) for start in range(0, len(images), EVAL_BATCH_SIZE)
    ]
    model.train(was_training)
    return torch.cat(probabilities).cpu().numpy()
