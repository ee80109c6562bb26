"""Hyperparameter defaults and the command line, shared by both trainers.

Defined once here so that `python -m mnist_torch.train` and `python -m mnist_jax.train`
can never drift apart: same flags, same defaults, same validation messages.

This module imports nothing but the standard library, and must stay so: every command checks its
flags with these parsers before it imports PyTorch or JAX (`mnist_common.cli`), so that a mistyped
flag fails in a fraction of a second instead of after seconds of imports. Each parser refuses a bad
value with argparse's usage and exactly one ``error:`` line (exit status 2), whatever the value.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

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
#: 10 000 epochs take days on a CPU), so anything larger is a typo (measured: benchmarks/RESULTS.md,
#: 'Design measurements').
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
    mode: str | None = None  # PyTorch: one of TORCH_MODES (None: eager); JAX: None, it always compiles
    api: str | None = None  # JAX: one of JAX_APIS (None: linen); PyTorch: None, it has one API
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


def _quoted(text: str, limit: int = 40) -> str:
    """`text` as Python writes a string literal (newlines and other invisible characters escaped, so an
    error stays one line), shortened to `limit` characters: a value can be anything the user typed."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _shown(text: str) -> str:
    """A value that parsed as a number but is out of range, as the user typed it when that is plain,
    quoted otherwise (``--lr ' nan'``, 10 000 digits)."""
    plain = text.strip()
    return plain if plain and plain.isprintable() and len(plain) <= 40 else _quoted(text)


def _bounded_int(low: int, high: int, limit: str) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; `limit` says why `high` is the most."""
    below = "a positive integer" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            digits = re.fullmatch(r"\s*([+-]?)(\d+)\s*", text)  # a number too long for int() (over 4300 digits)
            if digits and digits[1] == "-":
                raise argparse.ArgumentTypeError(
                    f"expected {below}, got a negative {len(digits[2])}-digit number"
                ) from None
            if digits:
                raise argparse.ArgumentTypeError(
                    f"expected at most {high} ({limit}), got a {len(digits[2])}-digit number"
                ) from None
            raise argparse.ArgumentTypeError(f"expected {below}, got {_quoted(text)}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {below}, got {_shown(text)}")
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high} ({limit}), got {_shown(text)}")
        return value

    return parse


_epochs = _bounded_int(1, MAX_EPOCHS, "longer runs are surely a typo")
_batch_size = _bounded_int(1, NUM_TRAIN, "the size of the training set")
_train_size = _bounded_int(1, NUM_TRAIN, "the size of the training set")
_test_size = _bounded_int(1, NUM_TEST, "the size of the test set")
_seed = _bounded_int(0, MAX_SEED, "2**32 - 1, a seed both frameworks take")
_devices = _bounded_int(1, MAX_DEVICES, "more than any machine holds")
_process_id = _bounded_int(0, MAX_DEVICES - 1, "below --num-processes")
_dist_timeout = _bounded_int(1, 86_400, "a day")


def _coordinator(text: str) -> str:
    """--coordinator: HOST:PORT of process 0 (an IPv6 address in brackets), the port 1 to 65535."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})", text)
    if not match or not 1 <= int(match[2]) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT of process 0 (such as localhost:12355), got {_quoted(text)}"
        )
    return text


def _float(text: str, expected: str) -> float:
    try:
        return float(text)
    except ValueError:  # float() accepts "nan", "inf", "1e999" (inf), "1_0" and surrounding whitespace
        raise argparse.ArgumentTypeError(f"expected {expected}, got {_quoted(text)}") from None


def _positive_float(text: str) -> float:
    """--lr: positive and finite (NaN, infinity, 0 and -0 are refused; 1e999 is infinity)."""
    value = _float(text, "a positive number")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {_shown(text)}")
    return value


def _momentum(text: str) -> float:
    """--momentum: in [0, 1) (NaN is refused); -0 is taken as 0, so that metrics.json never records -0.0."""
    value = _float(text, "a number in [0, 1)")
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {_shown(text)}")
    return value + 0.0  # -0.0 + 0.0 == +0.0


def _accuracy(text: str) -> float:
    """--stop-at-accuracy: a fraction in (0, 1] (NaN, infinity, 0, negatives and percentages such as 99 are refused)."""
    value = _float(text, "a fraction in (0, 1]")
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1] (such as 0.99 for 99%), got {_shown(text)}")
    return value


def _path(text: str) -> Path:
    """A path flag's value, refused when no file could have that name. The filesystem is not looked at
    here (see `mnist_common.cli`); an empty value is refused because Path("") is the current folder, so
    ``--out-dir ""`` would write a run's files into whatever folder the command ran in."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"expected a path, got {_quoted(text)}, which holds a NUL character")
    try:
        os.fsencode(text)
    except UnicodeError:
        raise argparse.ArgumentTypeError(
            f"expected a path, got {_quoted(text)}, which is no valid file name here"
        ) from None
    return Path(text)


def _one_line(message: str) -> str:
    """`message` with every invisible character escaped as in a Python literal: argparse puts some values
    into its messages unquoted (``unrecognized arguments: ...``), and one holding a newline would
    otherwise split the error over lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each help line ends with its default, unless it says the default itself or there is none (None):
    ``(default: runs/jax) (default: None)`` said the same thing twice, the second time wrongly."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser, whose error is always one line, whatever the user typed. Like argparse's, it
    prints the usage and ``PROG: error: MESSAGE`` on stderr and exits with status 2. It takes no
    abbreviated flag: ``--epoch 3`` is refused, not read as ``--epochs 3`` (nor, one day, as another flag)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        super().error(_one_line(message))


def build_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.train``'s flags, the same for both trainers (JAX has no --mode, PyTorch no --api
    or flags of its own for data parallelism: torchrun's environment).
    Each help line says what the flag accepts; values are checked here, paths in `mnist_common.cli`."""
    d = TrainConfig()
    parser = Parser(
        prog=f"python -m mnist_{framework}.train",
        description=(
            f"Train the MNIST CNN with {'PyTorch' if framework == 'torch' else 'JAX'} on the shipped real MNIST."
        ),
    )
    parser.add_argument(
        "--epochs", type=_epochs, default=d.epochs, help=f"passes over the training set: 1 to {MAX_EPOCHS}"
    )
    parser.add_argument(
        "--batch-size", type=_batch_size, default=d.batch_size, help="images per SGD step: 1 to --train-size"
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=d.lr,
        help="SGD learning rate: any positive finite number (one so large that training diverges is reported at "
        "the step where it does, and nothing of that epoch is saved)",
    )
    parser.add_argument(
        "--momentum", type=_momentum, default=d.momentum, help="SGD momentum (PyTorch convention): 0 <= momentum < 1"
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=d.seed,
        help=f"seeds initialization and the batch order: 0 to {MAX_SEED} (2**32 - 1)",
    )
    parser.add_argument("--device", choices=DEVICES, default=d.device, help="auto: cuda when a GPU is present")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="training compute precision; bf16: bfloat16 activations and gradients, float32 weights (mixed precision)",
    )
    parser.add_argument("--data-dir", type=_path, default=d.data_dir, help="folder holding MNIST/raw/*.gz; must exist")
    parser.add_argument(
        "--out-dir",
        type=_path,
        default=None,
        help=f"where metrics.json, plots, the checkpoint and weights.safetensors go (default: runs/{framework}); "
        "a folder, or a path whose nearest existing folder is writable (the trainer creates it)",
    )
    parser.add_argument(
        "--train-size",
        type=_train_size,
        default=d.train_size,
        help=f"use only the first N training images (quick runs): 1 to {NUM_TRAIN}, at least --batch-size",
    )
    parser.add_argument(
        "--test-size",
        type=_test_size,
        default=d.test_size,
        help=f"evaluate on only the first N test images (quick runs; the report says so): 1 to {NUM_TEST}",
    )
    if framework == "torch":
        parser.add_argument(
            "--mode",
            choices=TORCH_MODES,
            default="eager",
            help="how PyTorch runs the training step: eager; compile, the model through torch.compile; compile-step, "
            "the whole step (forward, backward, SGD) as one torch.compile(fullgraph=True) graph, PyTorch's fastest "
            "on the CPU; or cuda-graphs, the whole step captured once as a CUDA graph and replayed (GPU only); the "
            "same SGD steps in every mode",
        )
    if framework == "jax":
        parser.add_argument(
            "--api",
            choices=JAX_APIS,
            default="linen",
            help="the Flax API of the training step: linen (the pure-functional mirror), nnx-split (Flax NNX, one "
            "jax.jit step over the split state) or nnx-jit (Flax NNX's nnx.jit, as Flax's MNIST example); the same "
            "SGD steps, checkpoints and weights in each",
        )
        parser.add_argument(
            "--devices",
            type=_devices,
            default=d.devices,
            help="data parallelism: devices of this process to train on (each global batch is split among them), "
            "1 to as many as JAX sees; on the CPU, JAX_NUM_CPU_DEVICES=N makes N devices",
        )
        parser.add_argument(
            "--num-processes",
            type=_devices,
            default=d.num_processes,
            help="processes of one data-parallel run (jax.distributed), each started with the same flags and its own "
            "--process-id; 1: no other process",
        )
        parser.add_argument(
            "--process-id", type=_process_id, default=d.process_id, help="this process: 0 to --num-processes - 1"
        )
        parser.add_argument(
            "--coordinator",
            type=_coordinator,
            default=None,
            metavar="HOST:PORT",
            help="where process 0 listens for the others (needed with --num-processes 2 or more)",
        )
    parser.add_argument(
        "--dist-timeout",
        type=_dist_timeout,
        default=d.dist_timeout,
        metavar="SECONDS",
        help="data-parallel runs: how long a process waits for the others to start (and, where the engine allows, "
        "inside a collective) before it stops with an error instead of hanging",
    )
    parser.add_argument(
        "--stop-at-accuracy",
        type=_accuracy,
        default=None,
        metavar="ACC",
        help="stop after the first epoch whose test accuracy is >= ACC, a fraction in (0, 1] (0.99 for 99%%); "
        "everything is written as after a full run, and metrics.json's stopped_at_accuracy names that epoch; "
        "without it: train every --epochs",
    )
    parser.add_argument(
        "--nondeterministic",
        action="store_true",
        help="skip the deterministic settings and let each framework autotune its kernels (cuDNN benchmark, XLA's "
        "default): faster on a GPU, but not bit-reproducible there; changes nothing on the CPU",
    )
    parser.add_argument(
        "--tensorboard",
        type=_path,
        default=None,
        metavar="DIR",
        help="write TensorBoard scalars into DIR (created if missing): the training loss every few steps, test loss, "
        "test accuracy and images/s every epoch, the configuration; the same tags in both frameworks, so that two "
        "runs overlay (`tensorboard --logdir DIR`); --resume continues the same curves",
    )
    parser.add_argument(
        "--profile",
        type=_path,
        default=None,
        metavar="DIR",
        help="capture a few training steps of the first epoch, after compilation, with the framework's own "
        "profiler, into DIR (created if missing): a trace that Perfetto (ui.perfetto.dev) or TensorBoard opens",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the final result (no progress bar, no epoch lines)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=(
            "continue from the last completed epoch of the checkpoint in --out-dir "
            "(same batch size, lr, momentum, seed, train size)"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out-dir (its metrics.json, checkpoint, weights and plots), which is "
        "otherwise refused; its files are kept until this run has an epoch to save",
    )
    return parser


def parse_config(framework: str, argv: Sequence[str] | None = None) -> TrainConfig:
    """The training run that `argv` (default: sys.argv[1:]) asks for; exits with status 2 and one
    argparse error line for a bad value. Looks at no file: `mnist_common.cli` checks the paths."""
    parser = build_parser(framework)
    args = parser.parse_args(argv)
    if args.resume and args.overwrite:
        parser.error("pass either --resume (continue the run in --out-dir) or --overwrite (replace it), not both")
    if args.batch_size > args.train_size:
        parser.error(
            f"argument --batch-size: {args.batch_size} is larger than --train-size {args.train_size}; lower it"
        )
    if framework == "jax":
        if args.num_processes > 1 and args.coordinator is None:
            parser.error(
                f"argument --num-processes: {args.num_processes} processes need --coordinator HOST:PORT, "
                "where process 0 listens (such as localhost:12355)"
            )
        if args.num_processes == 1 and (args.coordinator is not None or args.process_id != 0):
            parser.error(
                "argument --coordinator/--process-id: only for runs of several processes; "
                "add --num-processes N (N >= 2), or drop them"
            )
        if args.process_id >= args.num_processes:
            parser.error(
                f"argument --process-id: {args.process_id} is not below --num-processes {args.num_processes}; "
                f"pass 0 to {args.num_processes - 1}"
            )
    out_dir = args.out_dir if args.out_dir is not None else default_out_dir(framework)
    return TrainConfig(**{**vars(args), "out_dir": out_dir})


def _add_model_source(parser: argparse.ArgumentParser, framework: str) -> None:
    """--weights FILE or --checkpoint DIR, the model predict and evaluate use, and their --device and --json."""
    parser.add_argument(
        "--weights",
        type=_path,
        default=None,
        metavar="FILE",
        help=(
            "a .safetensors file in PyTorch state_dict layout, exported by either framework "
            "(instead of --checkpoint); must exist"
        ),
    )
    parser.add_argument(
        "--checkpoint",
        type=_path,
        default=None,
        metavar="DIR",
        help=f"a training run's --out-dir holding its checkpoint; must exist (default: {default_out_dir(framework)})",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when a GPU is present")
    parser.add_argument("--json", action="store_true", help="print JSON for machines instead of text")


def build_predict_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.predict IMAGE... [--weights FILE | --checkpoint DIR] [--json]``, the same for
    both."""
    parser = Parser(
        prog=f"python -m mnist_{framework}.predict",
        description=(
            "Name the digit in each picture (PNG or JPEG, any size, light or dark background) with a trained CNN."
        ),
    )
    parser.add_argument(
        "images", nargs="+", type=_path, metavar="IMAGE", help="pictures of one digit each; each must exist"
    )
    _add_model_source(parser, framework)
    return parser


def build_evaluate_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.evaluate [--weights FILE | --checkpoint DIR] [--json]``, the same for both."""
    parser = Parser(
        prog=f"python -m mnist_{framework}.evaluate",
        description=(
            "Test loss and accuracy of trained weights (from either framework) on the 10 000 MNIST test images."
        ),
    )
    _add_model_source(parser, framework)
    parser.add_argument(
        "--data-dir", type=_path, default=DEFAULT_DATA_DIR, help="folder holding MNIST/raw/*.gz; must exist"
    )
    return parser


def _parse_model_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.weights is not None and args.checkpoint is not None:
        parser.error("pass either --weights FILE or --checkpoint DIR, not both")
    return args


def parse_evaluate_args(framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`evaluate`'s arguments; exits with status 2 and one argparse error line for a bad value or both
    model sources at once. Looks at no file: `mnist_common.cli` checks the paths."""
    return _parse_model_args(build_evaluate_parser(framework), argv)


def parse_predict_args(framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`predict`'s arguments, as `parse_evaluate_args`: --weights FILE or --checkpoint DIR, not both."""
    return _parse_model_args(build_predict_parser(framework), argv)
