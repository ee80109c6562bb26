"""Real MNIST, loaded once per session, for the tests and the benchmarks alike."""

from __future__ import annotations

import pytest

from mnist_jax import data as jax_data
from mnist_torch import data as torch_data


@pytest.fixture(scope="session")
def mnist() -> torch_data.MNISTData:
    return torch_data.load_mnist()


@pytest.fixture(scope="session")
def jax_mnist(mnist: torch_data.MNISTData) -> jax_data.MNISTData:
    return jax_data.MNISTData(train=jax_data.from_torch(mnist.train), test=jax_data.from_torch(mnist.test))
