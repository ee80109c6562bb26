"""The command line of every command, and the check each runs on it before it imports PyTorch or JAX.

``python -m mnist_<framework>.<train|evaluate|predict>`` calls `check_command_line` from an
``if __name__ == "__main__":`` block at the top of its module, above the imports that load PyTorch
or JAX (seconds, and a GB of memory; measured: benchmarks/RESULTS.md, 'Design measurements'): a mistyped
flag, a flag value out of range or a path that cannot work is refused at once, with argparse's usage and
one ``error:`` line naming the flag, the value and what is wrong (exit status 2), and nothing is imported,
created or written.

The parsers (`build_parser`, `parse_config` and the evaluate and predict commands') check the values against
`mnist_common.config`'s limits, each refusing a bad value with argparse's usage and exactly one ``error:`` line
(exit status 2), whatever the value; `check_command_line` adds the paths, which it only looks at: an --out-dir
is created by the trainer itself, later, under its lock (`mnist_common.outdir.out_dir_lock`). Like config, it
imports only the standard library.

The commands' ``main(argv)`` functions, which tests and other code call in-process, parse the same
way but leave the paths to the loaders, whose errors (exit status 1) say the same in more detail.
"""

from __future__ import annotations

import argparse
import errno
import functools
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from mnist_common.config import (
    DEFAULT_DATA_DIR,
    DEVICES,
    FRAMEWORK_SETTINGS,
    JAX_APIS,
    MAX_DEVICES,
    MAX_EPOCHS,
    MAX_SEED,
    NUM_TEST,
    NUM_TRAIN,
    PRECISIONS,
    TORCH_MODES,
    TrainConfig,
    default_out_dir,
)
from mnist_common.errors import install_memory_failure_hook, shown_path


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
            default=FRAMEWORK_SETTINGS["torch"]["mode"],
            help="how PyTorch runs the training step: eager; compile, the model through torch.compile; compile-step, "
            "the whole step (forward, backward, SGD) as one torch.compile(fullgraph=True) graph, PyTorch's fastest "
            "on the CPU; or cuda-graphs, the whole step captured once as a CUDA graph and replayed (GPU only); the "
            "same SGD steps in every mode",
        )
    if framework == "jax":
        parser.add_argument(
            "--api",
            choices=JAX_APIS,
            default=FRAMEWORK_SETTINGS["jax"]["api"],
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
    return TrainConfig(**vars(args)).for_framework(framework)


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


def _stat(path: Path) -> os.stat_result | None:
    """The file's status, or None when nothing is at `path` (or a file stands where a folder above it should)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def folder_problem(path: Path) -> str | None:
    """What makes `path` unusable as a folder to read from, or None."""
    try:
        status = _stat(path)
    except OSError as err:  # a folder above it unreadable, the name too long, a symlink loop
        return f"cannot be read ({err.strerror})"
    if status is None:
        return "does not exist"
    if not stat.S_ISDIR(status.st_mode):
        return "is a file, not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return "is not readable"
    return None


#: What a path that is neither a folder nor a regular file is, for messages (`stat.S_IS*` tests).
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO, a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_problem(path: Path, pipes: bool = False) -> str | None:
    """What makes `path` unusable as a file to read, or None. It only stats the path, never opens it: a device
    file is refused as not a regular file, and so is a FIFO unless `pipes` (pictures: ``predict /dev/stdin``
    and ``<(cat x.png)`` name a pipe, read once); a file whose length is checked first (weights) needs a real one."""
    try:
        status = _stat(path)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if status is None:
        return (
            "does not exist"
            if not os.path.islink(path)
            else f"is a symlink to {os.readlink(path)}, which does not exist"
        )
    if stat.S_ISDIR(status.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(status.st_mode) and not (pipes and stat.S_ISFIFO(status.st_mode)):
        kind = next((name for test, name in _SPECIAL_FILES if test(status.st_mode)), "a special file")
        return f"is not a regular file (it is {kind})"
    if not os.access(path, os.R_OK):
        return "is not readable"
    return None


def out_dir_problem(path: Path) -> str | None:
    """What keeps the trainer from writing into `path`, or None. It looks and creates nothing: `path` must
    be a writable folder, or be creatable, that is its nearest existing ancestor a writable folder and every
    missing name short enough for the file system."""
    missing: list[str] = []
    for candidate in (path, *path.parents):
        try:
            status = _stat(candidate)
        except PermissionError:  # a folder above it is not searchable: that folder is reported below
            status = None
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:  # a symlink loop, an I/O error; a name too long is reported below
                return f"cannot be used ({err.strerror})"
            status = None
        if status is None:
            if os.path.islink(candidate):  # a dangling symlink: mkdir would fail on its name (EEXIST), not create it
                what = "is" if candidate == path else f"cannot be created: {candidate} is"
                return (
                    f"{what} a symlink to {os.readlink(candidate)}, "
                    "which does not exist (create that folder, or remove the link)"
                )
            missing.append(candidate.name)
            continue
        if not stat.S_ISDIR(status.st_mode):
            return (
                "is a file, not a folder"
                if candidate == path
                else f"cannot be created: {candidate} is a file, not a folder"
            )
        if not os.access(candidate, os.W_OK | os.X_OK):
            return "is not writable" if candidate == path else f"cannot be created: {candidate} is not writable"
        if candidate != path:
            name_max = os.pathconf(candidate, "PC_NAME_MAX")
            too_long = [name for name in missing if len(os.fsencode(name)) > name_max]
            if too_long:
                return f"cannot be created: a name in it is longer than the file system allows ({name_max} bytes)"
            if len(os.fsencode(str(path))) >= os.pathconf(candidate, "PC_PATH_MAX"):
                return "cannot be created: it is longer than the file system allows"
        return None
    return "cannot be created: no folder above it exists"


def _refuse(build: Callable[[], argparse.ArgumentParser], flag: str, problems: list[str]) -> None:
    """Exit as argparse does for a bad value (usage, one error line, status 2) if there are `problems`."""
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        build().error(f"argument {flag}: {shown}")


def _data_dir_problems(path: Path) -> list[str]:
    problem = folder_problem(path)
    if problem is None:
        return []
    return [f"{path} {problem}; expected the folder holding MNIST/raw/*.gz (the default is {DEFAULT_DATA_DIR})"]


#: How to fix a --tensorboard or --profile folder that cannot be written.
FOLDER_FIX = "pass a writable folder, or a new one's path inside a writable folder, such as runs/tensorboard"


def check_train(framework: str, argv: Sequence[str] | None = None) -> TrainConfig:
    """The training run `argv` asks for, its --data-dir readable and its --out-dir writable or creatable."""
    config = parse_config(framework, argv)
    build = functools.partial(build_parser, framework)  # only for the usage line of a refusal
    _refuse(build, "--data-dir", _data_dir_problems(config.data_dir))
    problem = out_dir_problem(config.out_dir)
    _refuse(build, "--out-dir", [] if problem is None else [f"{config.out_dir} {problem}"])
    for flag, folder, what in (
        ("--tensorboard", config.tensorboard, "TensorBoard's event files"),
        ("--profile", config.profile, "the profiler's trace"),
    ):
        if folder is not None and (problem := out_dir_problem(folder)) is not None:
            _refuse(
                build, flag, [f"{folder} {problem}; expected a folder for {what} (created if missing); {FOLDER_FIX}"]
            )
    return config


def _checkpoint_problems(checkpoint: Path | None) -> list[str]:
    """An explicit --checkpoint must be a folder; without one, the command's own error (no checkpoint in
    runs/<framework>; train one with ...) is the more helpful one, so the default is not checked here."""
    problem = None if checkpoint is None else folder_problem(checkpoint)
    if problem is None:
        return []
    return [f"{checkpoint} {problem}; pass a training run's --out-dir, the folder that holds its checkpoint"]


def _check_model_source(build: Callable[[], argparse.ArgumentParser], args: argparse.Namespace) -> None:
    """An explicit --weights must be a readable file, an explicit --checkpoint a folder."""
    if args.weights is not None and (problem := file_problem(args.weights)) is not None:
        _refuse(
            build,
            "--weights",
            [f"{shown_path(args.weights)} {problem}; pass a weights.safetensors written by a training run"],
        )
    _refuse(build, "--checkpoint", _checkpoint_problems(args.checkpoint))


def check_evaluate(framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`evaluate`'s arguments, with an existing --weights file or --checkpoint folder and --data-dir."""
    args = parse_evaluate_args(framework, argv)
    build = functools.partial(build_evaluate_parser, framework)
    _check_model_source(build, args)
    _refuse(build, "--data-dir", _data_dir_problems(args.data_dir))
    return args


def check_predict(framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`predict`'s arguments, every IMAGE an existing file, with an existing --weights file or --checkpoint folder."""
    args = parse_predict_args(framework, argv)
    build = functools.partial(build_predict_parser, framework)
    images = [
        f"{shown_path(path)} {problem}"
        for path in args.images
        if (problem := file_problem(path, pipes=True)) is not None
    ]
    _refuse(build, "IMAGE", images)
    _check_model_source(build, args)
    return args


#: The check of each command's command line.
CHECKS: dict[str, Callable[[str, Sequence[str] | None], TrainConfig | argparse.Namespace]] = {
    "train": check_train,
    "evaluate": check_evaluate,
    "predict": check_predict,
}


def jax_environment_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """What in the environment keeps JAX from starting, for the one error line, or None.

    JAX_NUM_CPU_DEVICES (which --devices' help recommends) must be a whole number of at least 1: JAX itself
    fails with a traceback on a non-number at ``import jax`` and on 0 when its CPU backend starts, and takes
    a negative number as "not set", which is not what the user asked for.
    """
    value = environ.get("JAX_NUM_CPU_DEVICES")
    if value is not None and not (value.strip().isdecimal() and int(value) >= 1):
        return (
            f"JAX_NUM_CPU_DEVICES={value!r} is not a number of CPU devices; expected a whole number of at "
            f"least 1 (JAX_NUM_CPU_DEVICES=2 makes 2 CPU devices); set it so, or unset it for one CPU device"
        )
    return None


def check_command_line(
    command: str, framework: str, argv: Sequence[str] | None = None
) -> TrainConfig | argparse.Namespace:
    """Check ``python -m mnist_<framework>.<command> ARGV`` (default: sys.argv[1:]) without importing PyTorch
    or JAX: return what it parses to, or exit with status 2 and one error line (0 after --help). For JAX's
    commands, an environment JAX cannot start with (`jax_environment_problem`) then exits with status 1 and
    one error line: it is not the command line's fault."""
    try:
        os.getcwd()
    except FileNotFoundError:  # later, PyTorch's oneMKL ends the process with a FATAL of its own
        sys.exit("error: the current folder no longer exists (deleted or moved away); cd into a folder that exists")
    install_memory_failure_hook()  # from here on, the frameworks' imports included
    parsed = CHECKS[command](framework, argv)
    if framework == "jax" and (problem := jax_environment_problem()) is not None:
        sys.exit(f"error: {problem}")
    return parsed
