"""Every setting in one place, shared by both trainers: the training configuration (`TrainConfig`) and its
defaults, the data's constants, and the limits the command line checks (`mnist_common.cli` parses it).

Defined once here so that `python -m mnist_torch.train` and `python -m mnist_jax.train`
can never drift apart: same settings, same defaults. This module imports nothing but the standard library,
and must stay so: every command reads it before it imports PyTorch or JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mnist_common.errors import ProjectError

#: Where an installed copy (a wheel, ``pip install .``) carries the four MNIST .gz files: pyproject.toml maps the
#: repository's data/MNIST into the package as ``mnist_common/_data/MNIST/raw/``. A checkout has no such folder.
PACKAGED_DATA_DIR = Path(__file__).resolve().parent / "_data"

#: The repository's data folder in a checkout (editable installs included), the package's own copy in an
#: installed wheel: the default for ``--data-dir``, a folder holding MNIST/raw/*.gz either way. The package's
#: copy, like any read-only folder, is extracted into the user cache instead (`mnist_torch.data.extraction_dir`).
#: Defined here rather than in `mnist_torch.data` (which imports it from here) so that the command line needs no
#: PyTorch.
DEFAULT_DATA_DIR = (
    PACKAGED_DATA_DIR if (PACKAGED_DATA_DIR / "MNIST").is_dir() else Path(__file__).resolve().parent.parent / "data"
)

#: Images in MNIST's training set: the most --train-size (and so --batch-size) can be. `mnist_torch.data`
#: imports it from here, for the same reason.
NUM_TRAIN = 60_000

#: Mean and standard deviation of the training pixels scaled to [0, 1]; the measured
#: mean is 0.1306604762738429, the origin of the customary ``Normalize((0.1307,), (0.3081,))``.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

#: Images in MNIST's test set: the most --test-size can be, and what every run evaluated on before the flag.
NUM_TEST = 10_000

#: Settings added after runs were first recorded, each with the value every earlier run had: what a
#: metrics.json or checkpoint written before the setting existed means by leaving it out.
IMPLICIT_SETTINGS = {"test_size": NUM_TEST}

#: The most --epochs accepts. Far beyond any useful run (the default run reaches 99% in a few epochs, and
#: 10 000 epochs take days on a CPU), so anything larger is a typo (measured: docs/design.md).
MAX_EPOCHS = 10_000

#: The largest --seed: 2**32 - 1, a seed every generator involved takes (jax.random.key refuses seeds of
#: 2**63 and more, torch.manual_seed of 2**64 and more).
MAX_SEED = 2**32 - 1

DEVICES = ("auto", "cpu", "cuda")

#: Compute precision of the training steps. "bf16" is mixed precision: activations and gradients
#: in bfloat16, weights, optimizer state and the loss in float32. Evaluation is always float32.
PRECISIONS = ("float32", "bf16")

#: PyTorch's execution modes of the training step (--mode): plain eager; the model through `torch.compile` (what
#: a user writes first); the whole step, forward, backward and SGD, as one `torch.compile(fullgraph=True)` graph
#: (JAX's jitted step, with conv1 as one matmul on the CPU as JAX's); or the whole step captured as a CUDA graph
#: and replayed (a GPU only). JAX has one mode, compiled (`jax.jit`), and no --mode.
TORCH_MODES = ("eager", "compile", "compile-step", "cuda-graphs")

#: The Flax APIs the JAX trainer writes its step in (--api): Linen, the pure-functional mirror; Flax NNX's
#: functional route (`nnx.split` once, a `jax.jit` step over the pure state); and NNX's stateful route, the
#: form of Flax's own MNIST example (`nnx.jit` over the module and an `nnx.Optimizer`). The same SGD steps,
#: checkpoints and weights in every API (`mnist_jax.steps_nnx`). PyTorch has one API, and no --api.
JAX_APIS = ("linen", "nnx-split", "nnx-jit")

#: The settings one framework alone has, with their defaults: PyTorch's --mode, JAX's --api. A run of the other
#: framework leaves them None, so that metrics.json and checkpoints name only what applies
#: (`TrainConfig.for_framework`).
FRAMEWORK_SETTINGS = {"torch": {"mode": "eager"}, "jax": {"api": "linen"}}

#: The most --devices (per process) and --num-processes accept: far past any machine or cluster this project
#: would run on, so anything larger is a typo.
MAX_DEVICES = 4096

#: Default seconds a process of a data-parallel run waits for the others, at start-up (JAX's coordinator,
#: PyTorch's rendezvous) and, where the engine allows it, inside a collective, before it gives up with an
#: error instead of hanging (--dist-timeout).
DIST_TIMEOUT = 300

#: Test images per evaluation call: large enough to amortize dispatch, small enough for any device.
EVAL_BATCH_SIZE = 1000


class DeviceUnavailable(ProjectError, RuntimeError):
    """The --device asked for is not present; the message says what to pass instead."""


class DistributedError(ProjectError, RuntimeError):
    """A data-parallel run that cannot start, or that lost one of its processes; the message says what to do."""


def per_device_batch(batch_size: int, devices: int, what: str) -> int:
    """The images each of `devices` takes from every global batch: the global batch must split evenly, so
    that every device computes the mean over the same number of images and the mean of their gradients
    is the one-device gradient. `what` names the devices in the message ("2 devices", "2 processes")."""
    if batch_size % devices:
        raise DistributedError(
            f"--batch-size {batch_size} does not split evenly over {what}; pass a multiple of {devices} "
            f"(such as {max(devices, batch_size // devices * devices)})"
        )
    return batch_size // devices


@dataclass(frozen=True)
class TrainConfig:
    """One training run. The defaults reach >= 99% test accuracy in both frameworks."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"
    precision: str = "float32"  # one of PRECISIONS
    data_dir: Path = DEFAULT_DATA_DIR
    out_dir: Path | None = None  # None: runs/<framework>
    train_size: int = NUM_TRAIN
    test_size: int = NUM_TEST  # evaluate on the first N test images; below NUM_TEST only for quick runs
    quiet: bool = False
    resume: bool = False  # continue from the checkpoint in out_dir instead of starting afresh
    overwrite: bool = False  # replace the run already in out_dir (`mnist_common.outdir`); else it is refused
    mode: str | None = None  # PyTorch: one of TORCH_MODES; JAX: None, it always compiles (FRAMEWORK_SETTINGS)
    api: str | None = None  # JAX: one of JAX_APIS; PyTorch: None, it has one API
    # Data parallelism. JAX: --devices per process, and --num-processes > 1 starts jax.distributed with
    # --coordinator and --process-id. PyTorch takes its processes from torchrun's environment instead.
    devices: int = 1
    num_processes: int = 1
    process_id: int = 0
    coordinator: str | None = None  # HOST:PORT of process 0
    dist_timeout: int = DIST_TIMEOUT
    stop_at_accuracy: float | None = (
        None  # stop after the first epoch whose test accuracy reaches it (None: every epoch)
    )
    nondeterministic: bool = False  # skip the trainers' deterministic settings (`deterministic` in both train.py)
    tensorboard: Path | None = None  # a folder for TensorBoard's event files (`mnist_common.tensorboard`); None: none
    profile: Path | None = (
        None  # a folder for the profiler's trace of a few steps (`mnist_common.profiling`); None: none
    )

    def for_framework(self, framework: str) -> TrainConfig:
        """This run as `framework`'s trainer runs it: its own setting at its default where unset
        (FRAMEWORK_SETTINGS) and out_dir at runs/<framework> where unset, so that metrics.json names what ran."""
        unset = {key: value for key, value in FRAMEWORK_SETTINGS[framework].items() if getattr(self, key) is None}
        out_dir = default_out_dir(framework) if self.out_dir is None else self.out_dir
        return dataclasses.replace(self, **unset, out_dir=out_dir)

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def stopped_at(config: TrainConfig, accuracies: Sequence[float]) -> int | None:
    """--stop-at-accuracy: the epoch after which the run stops, given the test accuracy of every epoch so far
    (`accuracies`, in order, a resumed run's included): the last one when it reached the target before
    --epochs did; None when there is no target, it is not reached, or every epoch has run. Both trainers ask
    before each epoch (so a resumed run that had reached it trains nothing more) and once more for
    metrics.json. Every process of a data-parallel run evaluates the whole test set, so all take the same
    decision."""
    if config.stop_at_accuracy is None or not accuracies or len(accuracies) >= config.epochs:
        return None
    return len(accuracies) if accuracies[-1] >= config.stop_at_accuracy else None


def default_out_dir(framework: str) -> Path:
    """Where a trainer writes when no --out-dir is given, and where predict and evaluate look by default."""
    return Path("runs") / framework
