"""Real MNIST, loaded once per session, for the tests and the benchmarks alike."""

from __future__ import annotations

import os

import jax
import pytest

from mnist_jax import data as jax_data
from mnist_torch import data as torch_data


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-dry-run",
        action="store_true",
        help="benchmarks: every variant once, on two batches, timed and written to --benchmark-json like a real run "
        "(its figures mean nothing); `bash benchmarks/gpu_run.sh --dry-run` uses it",
    )
    parser.addoption(
        "--bench-deadline",
        type=float,
        default=None,
        metavar="UNIX_SECONDS",
        help="benchmarks: skip, with the reason, every benchmark that would start after this time (time.time())",
    )
    parser.addoption(
        "--bench-threads",
        type=int,
        default=None,
        metavar="N",
        help="benchmarks: threads for both frameworks (PyTorch's intra-op threads; XLA's CPU pool through the CPU "
        "affinity); default: every core this process may use",
    )
    parser.addoption(
        "--bench-seeds",
        type=int,
        default=None,
        metavar="N",
        help="benchmarks: seeds each trainer runs in the accuracy benchmark (default 10 on a GPU, 3 on the CPU)",
    )
    parser.addoption(
        "--bench-trainers",
        default=None,
        metavar="NAMES",
        help="benchmarks: the accuracy benchmark runs only these trainers, comma-separated (such as jax,jax_nnx_jit; "
        "benchmarks/test_accuracy.py's TRAINERS); default: every trainer the device has",
    )
    parser.addoption(
        "--bench-allow-dirty",
        action="store_true",
        help="benchmarks: run even though the working tree differs from its commit (the results are marked dirty)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Compile afresh, here and in the trainers the tests start as subprocesses: the benchmarks' compile
    seconds must be compilations, not loads from JAX's persistent cache, and no test may write into the
    user's cache. tests/test_cli.py turns the cache back on for the test of the cache itself."""
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    jax.config.update("jax_enable_compilation_cache", False)


@pytest.fixture(scope="session")
def mnist() -> torch_data.MNISTData:
    return torch_data.load_mnist()


@pytest.fixture(scope="session")
def jax_mnist(mnist: torch_data.MNISTData) -> jax_data.MNISTData:
    return jax_data.MNISTData(train=jax_data.from_torch(mnist.train), test=jax_data.from_torch(mnist.test))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """``trained_run("torch" | "jax")``: the out-dir of a real two-epoch run on the first 6 400 images
    (100 SGD steps, about 90% test accuracy), trained once per session and shared by the tool tests."""
    from mnist_common.config import TrainConfig
    from mnist_jax import train as jax_train
    from mnist_torch import train as torch_train

    trainers = {"torch": torch_train, "jax": jax_train}
    runs = {}

    def run(framework: str):
        if framework not in runs:
            out_dir = tmp_path_factory.mktemp(f"{framework}-run")
            trainers[framework].train(TrainConfig(epochs=2, train_size=6400, out_dir=out_dir, quiet=True))
            runs[framework] = out_dir
        return runs[framework]

    return run
