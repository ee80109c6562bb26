"""The check every command runs on its command line before it imports PyTorch or JAX.

``python -m mnist_<framework>.<train|evaluate|predict>`` calls `check_command_line` from an
``if __name__ == "__main__":`` block at the top of its module, above the imports that load PyTorch
or JAX (seconds, and a GB of memory; measured: benchmarks/RESULTS.md, 'Design measurements'): a mistyped
flag, a flag value out of range or a path that cannot work is refused at once, with argparse's usage and
one ``error:`` line naming the flag, the value and what is wrong (exit status 2), and nothing is imported,
created or written.

Values are checked by the parsers of `mnist_common.config`; this module adds the paths, which it only
looks at: an --out-dir is created by the trainer itself, later, under its lock
(`mnist_common.files.out_dir_lock`). Like config, it imports only the standard library.

The commands' ``main(argv)`` functions, which tests and other code call in-process, parse the same
way but leave the paths to the loaders, whose errors (exit status 1) say the same in more detail.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mnist_common.config import (
    DEFAULT_DATA_DIR,
    TrainConfig,
    build_evaluate_parser,
    build_parser,
    build_predict_parser,
    parse_config,
    parse_evaluate_args,
    parse_predict_args,
)
from mnist_common.errors import install_memory_failure_hook, shown_path


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
