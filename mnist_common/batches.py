"""The batches of an epoch, the same for both frameworks: which images, in which order, how many steps.

A function of (seed, epoch) alone, drawn with NumPy rather than either framework's generator, so that the
PyTorch and JAX trainers, on any device and in any number of processes, visit exactly the same batches in
the same order (each data-parallel process takes its share of every global batch: `local_columns` in
`mnist_torch.parallel`, the arrays' placement in `mnist_jax.parallel`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mnist_common.config import NUM_TRAIN


def epoch_permutation(seed: int, epoch: int, num_examples: int = NUM_TRAIN) -> np.ndarray:
    """The training order of one epoch, a function of (seed, epoch) alone.

    Drawn with NumPy rather than either framework's generator so that the torch and
    JAX trainers, on any device, visit exactly the same batches in the same order.
    """
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batch_indices(seed: int, epoch: int, num_examples: int, batch_size: int) -> Iterator[np.ndarray]:
    """Index arrays of the epoch's full batches; the incomplete last batch is dropped.

    Dropping it keeps every step the same shape (one compiled XLA program, equal work
    per step in both frameworks); the dropped images differ from epoch to epoch.
    """
    order = epoch_permutation(seed, epoch, num_examples)
    for start in range(0, num_examples - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def batch_order(seed: int, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
    """The epoch's batches as one (steps, batch) index array, `batch_indices` stacked: the form the
    trainers send to the device once per epoch, so each step gathers its batch there."""
    return np.stack(list(batch_indices(seed, epoch, num_examples, batch_size)))


def num_batches(num_examples: int, batch_size: int) -> int:
    """The SGD steps of an epoch: its full batches (`batch_indices` drops the incomplete last one)."""
    return num_examples // batch_size
