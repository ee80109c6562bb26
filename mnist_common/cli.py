"""The command line of every command, and the check each runs on it before it imports PyTorch or JAX.

``python -m mnist_<framework>.<train|evaluate|predict>`` calls `check_command_line` from an ``if __name__ ==
"__main__":`` block above the imports that load PyTorch or JAX (seconds, and a GB of memory: docs/design.md): a
mistyped flag, a value outside `mnist_common.config`'s limits or a path that cannot work is refused at once, with
argparse's usage and one ``error:`` line naming the flag, the value and what is wrong (exit status 2); nothing is
imported, created or written. The paths are checked by `mnist_common.paths`, which the loaders call again for the
commands' ``main(argv)`` (exit status 1). An --out-dir is only looked at: the trainer creates it under its lock.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import re
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
from mnist_common.paths import data_dir_problem, file_problem, folder_problem, out_dir_problem, weights_problem


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
            value, shown = int(text), _shown(text)
        except ValueError:
            digits = re.fullmatch(r"\s*([+-]?)(\d+)\s*", text)  # a number too long for int() (over 4300 digits)
            if not digits:
                raise argparse.ArgumentTypeError(f"expected {below}, got {_quoted(text)}") from None
            negative = digits[1] == "-"
            value = -math.inf if negative else math.inf
            shown = f"a {'negative ' * negative}{len(digits[2])}-digit number"
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {below}, got {shown}")
        if value > high:
            raise argparse.ArgumentTypeError(f"expected at most {high} ({limit}), got {shown}")
        return value

    return parse


_epochs = _bounded_int(1, MAX_EPOCHS, "longer runs are surely a typo")
_train_size = _bounded_int(1, NUM_TRAIN, "the size of the training set")  # --batch-size's too
_test_size = _bounded_int(1, NUM_TEST, "the size of the test set")
_seed = _bounded_int(0, MAX_SEED, "2**32 - 1, a seed both frameworks take")
_devices = _bounded_int(1, MAX_DEVICES, "more than any machine holds")
_process_id = _bounded_int(0, MAX_DEVICES - 1, "below --num-processes")
_dist_timeout = _bounded_int(1, 86_400, "a day")


def _bounded_float(expected: str, within: Callable[[float], bool], in_range: str) -> Callable[[str], float]:
    """An argparse type: a number for which `within` holds (NaN never does); `expected` says what a value that
    is no number should have been, `in_range` what one out of range should have been."""

    def parse(text: str) -> float:
        try:
            value = float(text)  # accepts "nan", "inf", "1e999" (inf), "1_0" and surrounding whitespace
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {_quoted(text)}") from None
        if not within(value):
            raise argparse.ArgumentTypeError(f"expected {in_range}, got {_shown(text)}")
        return value + 0.0  # -0.0 + 0.0 == +0.0, so that metrics.json never records -0.0

    return parse


#: --lr: positive and finite (NaN, infinity, 0 and -0 are refused; 1e999 is infinity).
_lr = _bounded_float("a positive number", lambda v: v > 0 and math.isfinite(v), "a positive finite number")
_momentum = _bounded_float("a number in [0, 1)", lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
#: --stop-at-accuracy: a fraction in (0, 1] (infinity, 0, negatives and percentages such as 99 are refused).
_accuracy = _bounded_float(
    "a fraction in (0, 1]", lambda v: 0.0 < v <= 1.0, "a fraction in (0, 1] (such as 0.99 for 99%)"
)


def _coordinator(text: str) -> str:
    """--coordinator: HOST:PORT of process 0 (an IPv6 address in brackets), the port 1 to 65535."""
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})", text)
    if not match or not 1 <= int(match[2]) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT of process 0 (such as localhost:12355), got {_quoted(text)}"
        )
    return text


def _path(text: str) -> Path:
    """A path flag's value, refused when no file could have that name (the filesystem is looked at later); an empty
    one too, since Path("") is the current folder: ``--out-dir ""`` would write into wherever the command ran."""
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
    """`message` with every invisible character escaped as in a Python literal: argparse puts some values into its
    messages unquoted (``unrecognized arguments: ...``), and a newline in one would split the error line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each help line ends with its default, unless it says the default itself or there is none (None):
    ``(default: runs/jax) (default: None)`` said the same thing twice, the second time wrongly."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser (usage, ``PROG: error: MESSAGE``, status 2), its error always one line, whatever the user
    typed; no abbreviated flag: ``--epoch 3`` is refused, not read as ``--epochs 3`` (nor, one day, as another)."""

    def __init__(self, command: str, framework: str, description: str) -> None:
        super().__init__(
            prog=f"python -m mnist_{framework}.{command}",
            description=description,
            allow_abbrev=False,
            formatter_class=DefaultsHelpFormatter,
        )

    def error(self, message: str) -> NoReturn:
        super().error(_one_line(message))


#: The help of the flags that train and evaluate share.
DEVICE_HELP = "auto: cuda when a GPU is present"
DATA_DIR_HELP = "folder holding MNIST/raw/*.gz; must exist"

#: The folders a training run writes besides --out-dir, created if missing: what goes there, and the flag's help.
OUTPUT_FOLDERS = {
    "--tensorboard": (
        "TensorBoard's event files",
        "write TensorBoard scalars into DIR (created if missing): the training loss every few steps, test loss, "
        "test accuracy and images/s every epoch, the configuration; the same tags in both frameworks, so that two "
        "runs overlay (`tensorboard --logdir DIR`); --resume continues the same curves",
    ),
    "--profile": (
        "the profiler's trace",
        "capture a few training steps of the first epoch, after compilation, with the framework's own "
        "profiler, into DIR (created if missing): a trace that Perfetto (ui.perfetto.dev) or TensorBoard opens",
    ),
}


def build_parser(framework: str) -> argparse.ArgumentParser:
    """``python -m mnist_<framework>.train``'s flags, the same for both trainers (JAX has no --mode, PyTorch no --api
    or flags of its own for data parallelism: torchrun's environment). Each help line says what the flag accepts;
    the defaults are `TrainConfig`'s and the framework's own setting (`FRAMEWORK_SETTINGS`)."""
    name = "PyTorch" if framework == "torch" else "JAX"
    parser = Parser("train", framework, f"Train the MNIST CNN with {name} on the shipped real MNIST.")
    add = parser.add_argument
    add("--epochs", type=_epochs, help=f"passes over the training set: 1 to {MAX_EPOCHS}")
    add("--batch-size", type=_train_size, help="images per SGD step: 1 to --train-size")
    add(
        "--lr",
        type=_lr,
        help="SGD learning rate: any positive finite number (one so large that training diverges is reported at "
        "the step where it does, and nothing of that epoch is saved)",
    )
    add("--momentum", type=_momentum, help="SGD momentum (PyTorch convention): 0 <= momentum < 1")
    add("--seed", type=_seed, help=f"seeds initialization and the batch order: 0 to {MAX_SEED} (2**32 - 1)")
    add("--device", choices=DEVICES, help=DEVICE_HELP)
    add(
        "--precision",
        choices=PRECISIONS,
        help="training compute precision; bf16: bfloat16 activations and gradients, float32 weights (mixed precision)",
    )
    add("--data-dir", type=_path, help=DATA_DIR_HELP)
    add(
        "--out-dir",
        type=_path,
        help=f"where metrics.json, plots, the checkpoint and weights.safetensors go (default: runs/{framework}); "
        "a folder, or a path whose nearest existing folder is writable (the trainer creates it)",
    )
    add(
        "--train-size",
        type=_train_size,
        help=f"use only the first N training images (quick runs): 1 to {NUM_TRAIN}, at least --batch-size",
    )
    add(
        "--test-size",
        type=_test_size,
        help=f"evaluate on only the first N test images (quick runs; the report says so): 1 to {NUM_TEST}",
    )
    if framework == "torch":
        add(
            "--mode",
            choices=TORCH_MODES,
            help="how PyTorch runs the training step: eager; compile, the model through torch.compile; compile-step, "
            "the whole step (forward, backward, SGD) as one torch.compile(fullgraph=True) graph, PyTorch's fastest "
            "on the CPU; or cuda-graphs, the whole step captured once as a CUDA graph and replayed (GPU only); the "
            "same SGD steps in every mode",
        )
    if framework == "jax":
        add(
            "--api",
            choices=JAX_APIS,
            help="the Flax API of the training step: linen (the pure-functional mirror), nnx-split (Flax NNX, one "
            "jax.jit step over the split state) or nnx-jit (Flax NNX's nnx.jit, as Flax's MNIST example); the same "
            "SGD steps, checkpoints and weights in each",
        )
        add(
            "--devices",
            type=_devices,
            help="data parallelism: devices of this process to train on (each global batch is split among them), "
            "1 to as many as JAX sees; on the CPU, JAX_NUM_CPU_DEVICES=N makes N devices",
        )
        add(
            "--num-processes",
            type=_devices,
            help="processes of one data-parallel run (jax.distributed), each started with the same flags and its own "
            "--process-id; 1: no other process",
        )
        add("--process-id", type=_process_id, help="this process: 0 to --num-processes - 1")
        add(
            "--coordinator",
            type=_coordinator,
            metavar="HOST:PORT",
            help="where process 0 listens for the others (needed with --num-processes 2 or more)",
        )
    add(
        "--dist-timeout",
        type=_dist_timeout,
        metavar="SECONDS",
        help="data-parallel runs: how long a process waits for the others to start (and, where the engine allows, "
        "inside a collective) before it stops with an error instead of hanging",
    )
    add(
        "--stop-at-accuracy",
        type=_accuracy,
        metavar="ACC",
        help="stop after the first epoch whose test accuracy is >= ACC, a fraction in (0, 1] (0.99 for 99%%); "
        "everything is written as after a full run, and metrics.json's stopped_at_accuracy names that epoch; "
        "without it: train every --epochs",
    )
    add(
        "--nondeterministic",
        action="store_true",
        help="skip the deterministic settings and let each framework autotune its kernels (cuDNN benchmark, XLA's "
        "default): faster on a GPU, but not bit-reproducible there; changes nothing on the CPU",
    )
    for flag, (_, text) in OUTPUT_FOLDERS.items():
        add(flag, type=_path, metavar="DIR", help=text)
    add("--quiet", action="store_true", help="print only the final result (no progress bar, no epoch lines)")
    add(
        "--resume",
        action="store_true",
        help="continue from the last completed epoch of the checkpoint in --out-dir "
        "(same batch size, lr, momentum, seed, train size)",
    )
    add(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out-dir (its metrics.json, checkpoint, weights and plots), which is "
        "otherwise refused; its files are kept until this run has an epoch to save",
    )
    parser.set_defaults(**{**vars(TrainConfig()), **FRAMEWORK_SETTINGS[framework]})
    return parser


def parse_config(framework: str, argv: Sequence[str] | None = None) -> TrainConfig:
    """The training run that `argv` (default: sys.argv[1:]) asks for; exits with status 2 and one
    argparse error line for a bad value or a bad combination. Looks at no file: `check_command_line` does."""
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


#: The commands that use a trained model, with their descriptions.
MODEL_COMMANDS = {
    "predict": "Name the digit in each picture (PNG or JPEG, any size, light or dark background) with a trained CNN.",
    "evaluate": "Test loss and accuracy of trained weights (from either framework) on the 10 000 MNIST test images.",
}


def build_model_parser(command: str, framework: str) -> argparse.ArgumentParser:
    """predict's or evaluate's flags, the same in both frameworks: the model from --weights FILE or --checkpoint DIR."""
    parser = Parser(command, framework, MODEL_COMMANDS[command])
    add = parser.add_argument
    if command == "predict":
        add("images", nargs="+", type=_path, metavar="IMAGE", help="pictures of one digit each; each must exist")
    add(
        "--weights",
        type=_path,
        metavar="FILE",
        help="a .safetensors file in PyTorch state_dict layout, exported by either framework "
        "(instead of --checkpoint); must exist",
    )
    add(
        "--checkpoint",
        type=_path,
        metavar="DIR",
        help=f"a training run's --out-dir holding its checkpoint; must exist (default: {default_out_dir(framework)})",
    )
    add("--device", choices=DEVICES, default="auto", help=DEVICE_HELP)
    add("--json", action="store_true", help="print JSON for machines instead of text")
    if command == "evaluate":
        add("--data-dir", type=_path, default=DEFAULT_DATA_DIR, help=DATA_DIR_HELP)
    return parser


def parse_model_args(command: str, framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """predict's or evaluate's arguments; exits with status 2 and one argparse error line for a bad value or
    both model sources at once. Looks at no file: `check_command_line` does."""
    parser = build_model_parser(command, framework)
    args = parser.parse_args(argv)
    if args.weights is not None and args.checkpoint is not None:
        parser.error("pass either --weights FILE or --checkpoint DIR, not both")
    return args


def _refuse(build: Callable[[], argparse.ArgumentParser], flag: str, problems: Sequence[str | None]) -> None:
    """Exit as argparse does for a bad value (usage, one error line, status 2) if there are `problems`."""
    problems = [problem for problem in problems if problem is not None]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        build().error(f"argument {flag}: {shown}")


#: How to fix a --tensorboard or --profile folder that cannot be written.
FOLDER_FIX = "pass a writable folder, or a new one's path inside a writable folder, such as runs/tensorboard"


def check_train(framework: str, argv: Sequence[str] | None = None) -> TrainConfig:
    """The training run `argv` asks for, its --data-dir readable and its --out-dir writable or creatable, as
    are its --tensorboard and --profile folders."""
    config = parse_config(framework, argv)
    build = functools.partial(build_parser, framework)  # only for the usage line of a refusal
    _refuse(build, "--data-dir", [data_dir_problem(config.data_dir)])
    for flag, (what, _) in {"--out-dir": (None, None), **OUTPUT_FOLDERS}.items():
        folder = getattr(config, flag[2:].replace("-", "_"))
        if folder is not None and (problem := out_dir_problem(folder)) is not None:
            fix = f"; expected a folder for {what} (created if missing); {FOLDER_FIX}" if what else ""
            _refuse(build, flag, [f"{folder} {problem}{fix}"])
    return config


def check_model_command(command: str, framework: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """predict's or evaluate's arguments: every IMAGE a file (or a pipe), --weights a readable file, --checkpoint a
    folder, evaluate's --data-dir readable; not the default checkpoint, whose own error (train one ...) helps more."""
    args = parse_model_args(command, framework, argv)
    build = functools.partial(build_model_parser, command, framework)
    if command == "predict":
        images = [(path, file_problem(path, pipes=True)) for path in args.images]
        _refuse(build, "IMAGE", [problem and f"{shown_path(path)} {problem}" for path, problem in images])
    if args.weights is not None:
        _refuse(build, "--weights", [weights_problem(args.weights)])
    if args.checkpoint is not None and (problem := folder_problem(args.checkpoint)) is not None:
        fix = "pass a training run's --out-dir, the folder that holds its checkpoint"
        _refuse(build, "--checkpoint", [f"{args.checkpoint} {problem}; {fix}"])
    if command == "evaluate":
        _refuse(build, "--data-dir", [data_dir_problem(args.data_dir)])
    return args


def jax_environment_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """A JAX_NUM_CPU_DEVICES that is not a whole number >= 1, for the one error line, or None: JAX fails with a
    traceback on a non-number or 0, and takes a negative number as "not set", which the user did not ask for."""
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
    """Check ``python -m mnist_<framework>.<command> ARGV`` without importing PyTorch or JAX: what it parses to, or
    exit 2 with one error line (0 after --help); an environment JAX cannot start with exits 1 (not the flags' fault)."""
    try:
        os.getcwd()
    except FileNotFoundError:  # later, PyTorch's oneMKL ends the process with a FATAL of its own
        sys.exit("error: the current folder no longer exists (deleted or moved away); cd into a folder that exists")
    install_memory_failure_hook()  # from here on, the frameworks' imports included
    parsed = check_train(framework, argv) if command == "train" else check_model_command(command, framework, argv)
    if framework == "jax" and (problem := jax_environment_problem()) is not None:
        sys.exit(f"error: {problem}")
    return parsed
