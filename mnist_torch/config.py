"""Hyperparameter defaults and the command line, shared by both trainers.

Defined once here so that `python -m mnist_torch.train` and `python -m mnist_jax.train`
can never drift apart: same flags, same defaults, same validation messages.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mnist_torch.data import DEFAULT_DATA_DIR, NUM_TRAIN

DEVICES = ("auto", "cpu", "cuda")

#: Compute precision of the training steps. "bf16" is mixed precision: activations and gradients
#: in bfloat16, weights, optimizer state and the loss in float32. Evaluation is always float32.
PRECISIONS = ("float32", "bf16")

#: PyTorch's execution modes of the training step (--mode): plain eager, the forward pass through
#: `torch.compile`, or the whole step captured as a CUDA graph and replayed (a GPU only). JAX has one
#: mode, compiled (`jax.jit`), and no --mode.
TORCH_MODES = ("eager", "compile", "cuda-graphs")

#: Test images per evaluation call: large enough to amortize dispatch, small enough for any device.
EVAL_BATCH_SIZE = 1000


class DeviceUnavailable(RuntimeError):
    """The --device asked for is not present; the message says what to pass instead."""


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
    quiet: bool = False
    resume: bool = False  # continue from the checkpoint in out_dir instead of starting afresh
    mode: str | None = None  # PyTorch: one of TORCH_MODES (None: eager); JAX: None, it always compiles

    def to_json(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}


def default_out_dir(framework: str) -> Path:
    """Where a trainer writes when no --out-dir is given, and where predict and evaluate look by default."""
    return Path("runs") / framework


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _momentum(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


def _train_size(text: str) -> int:
    value = _positive_int(text)
    if value > NUM_TRAIN:
        raise argparse.ArgumentTypeError(f"expected at most {NUM_TRAIN} (the size of the training set), got {value}")
    return value


def build_parser(framework: str) -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog=f"python -m mnist_{framework}.train",
        description=f"Train the MNIST CNN with {'PyTorch' if framework == 'torch' else 'JAX'} on the shipped real MNIST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=_positive_int, default=d.epochs, help="passes over the training set")
    parser.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="images per SGD step")
    parser.add_argument("--lr", type=_positive_float, default=d.lr, help="SGD learning rate")
    parser.add_argument("--momentum", type=_momentum, default=d.momentum, help="SGD momentum (PyTorch convention)")
    parser.add_argument("--seed", type=_non_negative_int, default=d.seed, help="seeds initialization and the batch order")
    parser.add_argument("--device", choices=DEVICES, default=d.device, help="auto: cuda when a GPU is present")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=d.precision,
        help="training compute precision; bf16: bfloat16 activations and gradients, float32 weights (mixed precision)",
    )
    parser.add_argument("--data-dir", type=Path, default=d.data_dir, help="folder holding MNIST/raw/*.gz")
    parser.add_argument(
        "--out-dir", type=Path, default=None,
        help=f"where metrics.json, plots, the checkpoint and weights.safetensors go (default: runs/{framework})",
    )
    parser.add_argument(
        "--train-size", type=_train_size, default=d.train_size, help="use only the first N training images (quick runs)"
    )
    if framework == "torch":
        parser.add_argument(
            "--mode", choices=TORCH_MODES, default="eager",
            help="how PyTorch runs the training step: eager, the forward pass through torch.compile, "
            "or the whole step captured once as a CUDA graph and replayed (GPU only); the same SGD steps in every mode",
        )
    parser.add_argument("--quiet", action="store_true", help="print only the final result (no progress bar, no epoch lines)")
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from the last completed epoch of the checkpoint in --out-dir (same batch size, lr, momentum, seed, train size)",
    )
    return parser


def parse_config(framework: str, argv: Sequence[str] | None = None) -> TrainConfig:
    parser = build_parser(framework)
    args = parser.parse_args(argv)
    if args.batch_size > args.train_size:
        parser.error(f"argument --batch-size: {args.batch_size} is larger than --train-size {args.train_size}; lower it")
    out_dir = args.out_dir if args.out_dir is not None else default_out_dir(framework)
    return TrainConfig(**{**vars(args), "out_dir": out_dir})


def _add_model_source(parser: argparse.ArgumentParser, framework: str) -> None:
    parser.add_argument(
        "--checkpoint", type=Path, default=None, metavar="DIR",
        help=f"a training run's --out-dir holding its checkpoint (default: {default_out_dir(framework)})",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when a GPU is present")
    parser.add_argument("--json", action="store_true", help="print JSON for machines instead of text")


def build_predict_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.predict IMAGE... [--checkpoint DIR] [--json]``, the same for both."""
    parser = argparse.ArgumentParser(
        prog=f"python -m mnist_{framework}.predict",
        description="Name the digit in each picture (PNG or JPEG, any size, light or dark background) with a trained CNN.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="pictures of one digit each")
    _add_model_source(parser, framework)
    return parser


def build_evaluate_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.evaluate [--weights FILE | --checkpoint DIR] [--json]``, the same for both."""
    parser = argparse.ArgumentParser(
        prog=f"python -m mnist_{framework}.evaluate",
        description="Test loss and accuracy of trained weights (from either framework) on the 10 000 MNIST test images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="FILE",
        help="a .safetensors file in PyTorch state_dict layout, exported by either framework (instead of --checkpoint)",
    )
    _add_model_source(parser, framework)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder holding MNIST/raw/*.gz")
    return parser


def parse_evaluate_args(framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_evaluate_parser(framework)
    args = parser.parse_args(argv)
    if args.weights is not None and args.checkpoint is not None:
        parser.error("pass either --weights FILE or --checkpoint DIR, not both")
    return args
