"""Every flag, every value, checked first: the command lines of both trainers, `evaluate` and
`predict` either parse to a valid run or are refused with argparse's usage and exactly one ``error:``
line, exit status 2, never a traceback; and `python -m ...` refuses them before importing PyTorch or JAX.

The properties run the real parsers and path checks in-process (`mnist_common.cli.check_command_line`,
what each command's ``__main__`` block calls): hundreds of command lines in seconds, none of them
trained. A few subprocess tests then run the real commands (marked e2e: `pytest -m e2e`, as .ci/run runs them).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_common.cli import check_command_line, parse_config, parse_model_args
from mnist_common.config import (
    DEVICES,
    JAX_APIS,
    MAX_EPOCHS,
    MAX_SEED,
    NUM_TEST,
    NUM_TRAIN,
    PRECISIONS,
    TORCH_MODES,
    TrainConfig,
)
from mnist_common.paths import out_dir_problem

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = ["torch", "jax"]
COMMANDS = [(command, framework) for command in ("train", "evaluate", "predict") for framework in FRAMEWORKS]
HEAVY = {"torch", "torchvision", "jax", "jaxlib", "flax", "optax", "orbax", "numpy"}

#: Hypothesis examples per property test; derandomized, so CI sees the same command lines every run.
EXAMPLES = 300
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# --- places on disk the generated paths point at ------------------------------------------------------------------


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Paths of every kind a path flag can meet: folders, files, missing ones, one under a file, one too long."""
    root = tmp_path_factory.mktemp("places")
    (root / "folder").mkdir()
    (root / "file.png").write_bytes(b"not really a picture: only its existence is checked")
    return {
        "folder": str(root / "folder"),
        "file": str(root / "file.png"),
        "missing": str(root / "missing"),
        "missing_deeper": str(root / "missing" / "deeper"),
        "under_file": str(root / "file.png" / "run"),
        "too_long": str(root / ("x" * 300) / "run"),
        "data": str(REPO / "data"),
        "seven": str(REPO / "docs" / "seven.png"),
    }


# --- what to generate -------------------------------------------------------------------------------------------------

#: Values chosen to hit every boundary the parsers draw, and what float() and int() accept unexpectedly.
AWKWARD = [
    "",
    " ",
    "-0",
    "+0",
    "0",
    "1",
    "-1",
    "0.0",
    "-0.0",
    "1.0",
    "nan",
    "-nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "-1e999",
    "1e-400",
    "1e308",
    "0x10",
    "1_000",
    "1__0",
    "٣",
    "１２",
    "²",
    "9" * 5000,
    "-" + "9" * 5000,
    "\n",
    "1\n",
    " 5 ",
    "0.9999999999999999",
    "0.9",
    "128",
    "6400",
    "60000",
    "60001",
    str(MAX_EPOCHS),
    str(MAX_EPOCHS + 1),
    str(MAX_SEED),
    str(MAX_SEED + 1),
    str(2**64),
    "auto",
    "cpu",
    "cuda",
    "tpu",
    "float32",
    "bf16",
    "eager",
    "compile",
    "cuda-graphs",
    "\x00",
    "a\x00b",
    "\udcff",
    "\ud800",
    "é",
    "数字",
    "../..",
    ".",
    "/",
    "-x",
    "--",
    "-",
    "=",
]

#: Values a flag accepts, so that many generated command lines parse through to a valid run.
GOOD = {
    "--epochs": st.integers(1, MAX_EPOCHS).map(str),
    "--batch-size": st.integers(1, 512).map(str),
    "--train-size": st.integers(512, NUM_TRAIN).map(str),
    "--test-size": st.integers(1, NUM_TEST).map(str),
    "--lr": st.floats(1e-6, 10).map(repr),
    "--momentum": st.floats(0, 0.99).map(repr),
    "--seed": st.integers(0, MAX_SEED).map(str),
    "--device": st.sampled_from(DEVICES),
    "--precision": st.sampled_from(PRECISIONS),
    "--mode": st.sampled_from(TORCH_MODES),
    "--api": st.sampled_from(JAX_APIS),
    "--devices": st.integers(1, 8).map(str),
    "--dist-timeout": st.integers(1, 3600).map(str),
    "--stop-at-accuracy": st.floats(0, 1, exclude_min=True).map(repr),
}
TRAIN_FLAGS = [
    "--epochs",
    "--batch-size",
    "--lr",
    "--momentum",
    "--seed",
    "--device",
    "--precision",
    "--data-dir",
    "--out-dir",
    "--train-size",
    "--test-size",
    "--stop-at-accuracy",
    "--tensorboard",
    "--profile",
]
FLAGS = {
    ("train", "torch"): TRAIN_FLAGS + ["--mode", "--dist-timeout"],
    ("train", "jax"): TRAIN_FLAGS + ["--api", "--devices", "--dist-timeout"],
    ("evaluate", "torch"): ["--weights", "--checkpoint", "--device", "--data-dir"],
    ("predict", "torch"): ["--checkpoint", "--device"],
}
FLAGS[("evaluate", "jax")], FLAGS[("predict", "jax")] = FLAGS[("evaluate", "torch")], FLAGS[("predict", "torch")]
SWITCHES = {"train": ["--quiet", "--resume", "--nondeterministic"], "evaluate": ["--json"], "predict": ["--json"]}


def anything(places: dict[str, str]) -> st.SearchStrategy[str]:
    """Any text at all: arbitrary unicode, numbers of every size and kind, awkward values, paths."""
    return st.one_of(
        st.text(max_size=12),
        st.integers(-(10**30), 10**30).map(str),
        st.floats().map(repr),  # nan, inf, -0.0, 5e-324, 1.7976931348623157e+308, ...
        st.sampled_from(AWKWARD),
        st.sampled_from(sorted(places.values())),
    )


def good_paths(flag: str, places: dict[str, str]) -> st.SearchStrategy[str]:
    """Paths `flag` accepts: files to read, folders to read, out-dirs that exist or can be created."""
    if flag in ("--weights", "IMAGE"):
        return st.sampled_from([places["seven"], places["file"]])
    if flag in ("--data-dir", "--checkpoint"):
        return st.sampled_from([places["folder"], places["data"]])
    # --out-dir, --tensorboard, --profile
    return st.sampled_from([places["folder"], places["missing"], places["missing_deeper"]])


def command_lines(command: str, framework: str, places: dict[str, str]) -> st.SearchStrategy[list[str]]:
    """Half of them tame: up to 6 flags with values they accept (``--flag value`` or ``--flag=value``) and
    switches, any repeated, most of which parse. Half wild: any value for any flag, unknown flags and bare
    values among them. For predict, led by up to 3 pictures (good ones when tame)."""
    flags = FLAGS[(command, framework)]

    def lines(wild: bool) -> st.SearchStrategy[list[str]]:
        def value(flag: str) -> st.SearchStrategy[str]:
            good = GOOD[flag] if flag in GOOD else good_paths(flag, places)
            return st.one_of(good, anything(places)) if wild else good

        pair = st.sampled_from(flags).flatmap(lambda flag: value(flag).map(lambda v: [flag, v]))
        joined = st.sampled_from(flags).flatmap(lambda flag: value(flag).map(lambda v: [f"{flag}={v}"]))
        switch = st.sampled_from(SWITCHES[command]).map(lambda s: [s])
        unknown = st.from_regex(r"\A--?[a-z][a-z-]{0,10}\Z").map(lambda s: [s])
        bare = anything(places).map(lambda v: [v])
        group = st.one_of(pair, pair, joined, switch, unknown, bare) if wild else st.one_of(pair, pair, joined, switch)
        argv = st.lists(group, max_size=6).map(lambda gs: [token for g in gs for token in g])
        if command == "predict":
            picture = value("IMAGE")
            argv = st.tuples(st.lists(picture, min_size=0 if wild else 1, max_size=3), argv).map(
                lambda both: both[0] + both[1]
            )
        return argv

    return st.one_of(lines(wild=False), lines(wild=True))


# --- the property -----------------------------------------------------------------------------------------------------


def run(command: str, framework: str, argv: list[str]) -> tuple[object, int | str | None, str, str]:
    """`check_command_line` on `argv`, in-process: (what it parsed to or None, the exit status or None, stdout,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return check_command_line(command, framework, argv), None, out.getvalue(), err.getvalue()
        except SystemExit as exit_info:
            return None, exit_info.code, out.getvalue(), err.getvalue()


def is_help(token: str) -> bool:
    """-h, or --help or a prefix of it that argparse takes for it (argparse accepts unambiguous prefixes)."""
    return token.startswith("-h") or (len(token) >= 3 and "--help".startswith(token.split("=")[0]))


def assert_one_error_line(prog: str, stderr: str) -> str:
    """argparse's usage, then exactly one ``PROG: error: ...`` line, last; no traceback. Returns the message."""
    lines = stderr.splitlines()
    assert lines and lines[0].startswith(f"usage: {prog} "), stderr
    assert sum(": error: " in line for line in lines) == 1 and lines[-1].startswith(f"{prog}: error: "), stderr
    assert all(line.startswith(" ") for line in lines[1:-1]), stderr  # the rest of the usage, indented
    assert "Traceback" not in stderr
    return lines[-1].removeprefix(f"{prog}: error: ")


def assert_valid(command: str, framework: str, parsed: object, argv: list[str]) -> None:
    """What a command line parsed to is a run that can start: every value in range, every path usable."""
    if command == "train":
        assert isinstance(parsed, TrainConfig)
        assert 1 <= parsed.epochs <= MAX_EPOCHS and 0 <= parsed.seed <= MAX_SEED
        assert 1 <= parsed.batch_size <= parsed.train_size <= NUM_TRAIN and 1 <= parsed.test_size <= NUM_TEST
        assert parsed.lr > 0 and math.isfinite(parsed.lr)
        assert 0 <= parsed.momentum < 1 and math.copysign(1, parsed.momentum) == 1  # never -0.0
        assert parsed.device in DEVICES and parsed.precision in PRECISIONS
        assert parsed.mode in (TORCH_MODES if framework == "torch" else (None,))
        assert parsed.api in (JAX_APIS if framework == "jax" else (None,))
        assert parsed.stop_at_accuracy is None or 0 < parsed.stop_at_accuracy <= 1
        assert isinstance(parsed.nondeterministic, bool)
        assert parsed.data_dir.is_dir() and out_dir_problem(parsed.out_dir) is None
        assert all(folder is None or out_dir_problem(folder) is None for folder in (parsed.tensorboard, parsed.profile))
        assert parse_config(framework, argv) == parsed  # main() parses the same run
        return
    assert parsed.device in DEVICES and isinstance(parsed.json, bool)
    assert parsed.checkpoint is None or parsed.checkpoint.is_dir()
    if command == "evaluate":
        assert parsed.weights is None or parsed.checkpoint is None
        assert parsed.weights is None or parsed.weights.is_file()
        assert parsed.data_dir.is_dir()
        assert parse_model_args("evaluate", framework, argv) == parsed
    else:
        assert parsed.images and all(path.is_file() for path in parsed.images)


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command, framework", COMMANDS)
def test_any_command_line_parses_to_a_valid_run_or_is_refused_in_one_line(command, framework, places, tmp_path):
    """The property, over `EXAMPLES` generated command lines per command; relative paths land in an empty
    folder, which must stay empty (the checks create nothing), and so must the places' folder."""
    prog = f"python -m mnist_{framework}.{command}"
    root = Path(places["folder"]).parent
    before = listing(root)
    outcomes: dict[str, int] = {"parsed": 0, "refused": 0, "help": 0}

    @PROPERTY
    @given(argv=command_lines(command, framework, places))
    def check(argv: list[str]) -> None:
        parsed, code, stdout, stderr = run(command, framework, argv)
        if code == 0:  # --help, or an abbreviation of it
            assert any(is_help(token) for token in argv) and stdout.startswith(f"usage: {prog}") and not stderr
            outcomes["help"] += 1
        elif parsed is None:
            assert code == 2 and not stdout
            assert_one_error_line(prog, stderr)
            outcomes["refused"] += 1
        else:
            assert not stdout and not stderr
            assert_valid(command, framework, parsed, argv)
            outcomes["parsed"] += 1
        assert not any(tmp_path.iterdir()), list(tmp_path.iterdir())

    with contextlib.chdir(tmp_path):
        check()
    assert listing(root) == before
    # Both outcomes are exercised, each many times (derandomized: the same counts every run).
    print(f"{prog}: {outcomes}")
    assert outcomes["parsed"] >= EXAMPLES // 5 and outcomes["refused"] >= EXAMPLES // 5, outcomes


# --- decisions, one by one --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "x"], "argument --epochs: expected a positive integer, got 'x'"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (
            ["--epochs", str(MAX_EPOCHS + 1)],
            f"argument --epochs: expected at most {MAX_EPOCHS} (longer runs are surely a typo), got {MAX_EPOCHS + 1}",
        ),
        (
            ["--epochs", "9" * 5000],
            f"argument --epochs: expected at most {MAX_EPOCHS} (longer runs are surely a typo), "
            "got a 5000-digit number",
        ),
        (["--epochs", "1.5"], "argument --epochs: expected a positive integer, got '1.5'"),
        (
            ["--batch-size", str(NUM_TRAIN + 1)],
            f"argument --batch-size: expected at most {NUM_TRAIN} (the size of the training set)",
        ),
        (
            ["--train-size", "6400", "--batch-size", "6401"],
            "argument --batch-size: 6401 is larger than --train-size 6400; lower it",
        ),
        (
            ["--train-size", str(NUM_TRAIN + 1)],
            f"argument --train-size: expected at most {NUM_TRAIN} (the size of the training set), got {NUM_TRAIN + 1}",
        ),
        (["--lr", "nan"], "argument --lr: expected a positive finite number, got nan"),
        (["--lr", "inf"], "argument --lr: expected a positive finite number, got inf"),
        (["--lr", "1e999"], "argument --lr: expected a positive finite number, got 1e999"),
        (["--lr", "-0"], "argument --lr: expected a positive finite number, got -0"),
        (["--lr", ""], "argument --lr: expected a positive number, got ''"),
        (["--momentum", "1"], "argument --momentum: expected a number in [0, 1), got 1"),
        (["--momentum", "-0.1"], "argument --momentum: expected a number in [0, 1), got -0.1"),
        (["--momentum", "nan"], "argument --momentum: expected a number in [0, 1), got nan"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got -1"),
        (
            ["--seed", str(MAX_SEED + 1)],
            f"argument --seed: expected at most {MAX_SEED} (2**32 - 1, a seed both frameworks take), "
            f"got {MAX_SEED + 1}",
        ),
        (["--out-dir", ""], "argument --out-dir: expected a path, got an empty string"),
        (["--data-dir", ""], "argument --data-dir: expected a path, got an empty string"),
        (
            ["--stop-at-accuracy", "0"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got 0",
        ),
        (
            ["--stop-at-accuracy", "99"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got 99",
        ),
        (
            ["--stop-at-accuracy", "1.0000001"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got 1.0000001",
        ),
        (
            ["--stop-at-accuracy", "-0.5"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got -0.5",
        ),
        (
            ["--stop-at-accuracy", "nan"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got nan",
        ),
        (
            ["--stop-at-accuracy", "inf"],
            "argument --stop-at-accuracy: expected a fraction in (0, 1] (such as 0.99 for 99%), got inf",
        ),
        (["--stop-at-accuracy", "99%"], "argument --stop-at-accuracy: expected a fraction in (0, 1], got '99%'"),
        (["--nondeterministic", "yes"], "unrecognized arguments: yes"),
        (["--epochs", "1\n2"], r"argument --epochs: expected a positive integer, got '1\n2'"),
        (["--what\nnow"], r"unrecognized arguments: --what\nnow"),
        (["--epochs", "2", "--epochs"], "argument --epochs: expected one argument"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_absurd_values_are_refused_with_one_line_saying_why(framework, argv, message):
    parsed, code, _, stderr = run("train", framework, argv)
    assert code == 2 and parsed is None
    assert assert_one_error_line(f"python -m mnist_{framework}.train", stderr).startswith(message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--devices", "0"], "argument --devices: expected a positive integer, got 0"),
        (
            ["--num-processes", "2"],
            "argument --num-processes: 2 processes need --coordinator HOST:PORT, where process 0 listens",
        ),
        (
            ["--coordinator", "localhost:1234"],
            "argument --coordinator/--process-id: only for runs of several processes",
        ),
        (["--process-id", "1"], "argument --coordinator/--process-id: only for runs of several processes"),
        (
            ["--num-processes", "2", "--process-id", "2", "--coordinator", "localhost:1234"],
            "argument --process-id: 2 is not below --num-processes 2; pass 0 to 1",
        ),
        (
            ["--num-processes", "2", "--coordinator", "localhost"],
            "argument --coordinator: expected HOST:PORT of process 0",
        ),
        (
            ["--num-processes", "2", "--coordinator", "localhost:70000"],
            "argument --coordinator: expected HOST:PORT of process 0",
        ),
        (["--dist-timeout", "0"], "argument --dist-timeout: expected a positive integer, got 0"),
    ],
)
def test_data_parallel_flags_are_checked_first(argv, message):
    parsed, code, _, stderr = run("train", "jax", argv)
    assert code == 2 and parsed is None
    assert assert_one_error_line("python -m mnist_jax.train", stderr).startswith(message)


def test_data_parallel_flags_parse():
    config = check_command_line(
        "train",
        "jax",
        [
            "--devices",
            "4",
            "--num-processes",
            "2",
            "--process-id",
            "1",
            "--coordinator",
            "[::1]:12355",
            "--dist-timeout",
            "60",
        ],
    )
    assert (config.devices, config.num_processes, config.process_id, config.coordinator, config.dist_timeout) == (
        4,
        2,
        1,
        "[::1]:12355",
        60,
    )
    parsed, code, _, stderr = run("train", "torch", ["--devices", "2"])  # PyTorch takes its processes from torchrun
    assert code == 2 and "unrecognized arguments: --devices 2" in stderr


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_edge_values_that_are_valid_parse(framework):
    config = check_command_line(
        "train",
        framework,
        [
            "--epochs",
            str(MAX_EPOCHS),
            "--seed",
            str(MAX_SEED),
            "--momentum",
            "-0",
            "--lr",
            "1e-3",
            "--train-size",
            "128",
            "--batch-size",
            "128",
            "--epochs",
            "3",  # repeated: the last one counts
        ],
    )
    assert (config.epochs, config.seed, config.train_size, config.batch_size, config.lr) == (
        3,
        MAX_SEED,
        128,
        128,
        1e-3,
    )
    assert config.momentum == 0 and math.copysign(1, config.momentum) == 1  # -0 is taken as 0
    assert (config.stop_at_accuracy, config.nondeterministic) == (
        None,
        False,
    )  # the defaults: every epoch, deterministic
    config = check_command_line("train", framework, ["--stop-at-accuracy", "1", "--nondeterministic"])
    assert (config.stop_at_accuracy, config.nondeterministic) == (1.0, True)  # 100% is a target, if a demanding one


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_paths_that_cannot_work_are_refused_and_nothing_is_created(framework, places, tmp_path):
    cases = [
        ("train", ["--out-dir", places["file"]], f"argument --out-dir: {places['file']} is a file, not a folder"),
        (
            "train",
            ["--out-dir", places["under_file"]],
            f"argument --out-dir: {places['under_file']} cannot be created: {places['file']} is a file, not a folder",
        ),
        (
            "train",
            ["--out-dir", places["too_long"]],
            f"argument --out-dir: {places['too_long']} cannot be created: "
            "a name in it is longer than the file system allows",
        ),
        (
            "train",
            ["--data-dir", places["missing"]],
            f"argument --data-dir: {places['missing']} does not exist; expected the folder holding MNIST/raw/*.gz",
        ),
        ("train", ["--data-dir", places["file"]], f"argument --data-dir: {places['file']} is a file, not a folder"),
        (
            "train",
            ["--tensorboard", places["file"]],
            f"argument --tensorboard: {places['file']} is a file, not a folder; expected a folder for TensorBoard's "
            "event files (created if missing); pass a writable folder",
        ),
        (
            "train",
            ["--profile", places["under_file"]],
            f"argument --profile: {places['under_file']} cannot be created: {places['file']} is a file, not a folder; "
            "expected a folder for the profiler's trace",
        ),
        ("evaluate", ["--weights", places["missing"]], f"argument --weights: {places['missing']} does not exist"),
        (
            "evaluate",
            ["--weights", places["folder"]],
            f"argument --weights: {places['folder']} is a folder, not a file",
        ),
        (
            "evaluate",
            ["--checkpoint", places["missing"]],
            f"argument --checkpoint: {places['missing']} does not exist; pass a training run's --out-dir",
        ),
        (
            "evaluate",
            ["--checkpoint", places["file"]],
            f"argument --checkpoint: {places['file']} is a file, not a folder",
        ),
        ("evaluate", ["--data-dir", places["missing"]], f"argument --data-dir: {places['missing']} does not exist"),
        (
            "evaluate",
            ["--weights", places["file"], "--checkpoint", places["folder"]],
            "pass either --weights FILE or --checkpoint DIR, not both",
        ),
        (
            "predict",
            [places["seven"], places["missing"], places["folder"]],
            f"argument IMAGE: {places['missing']} does not exist; {places['folder']} is a folder, not a file",
        ),
        (
            "predict",
            [places["seven"], "--checkpoint", places["missing"]],
            f"argument --checkpoint: {places['missing']} does not exist",
        ),
        ("predict", [], "the following arguments are required: IMAGE"),
    ]
    root = Path(places["folder"]).parent
    before = listing(root)
    with contextlib.chdir(tmp_path):
        for command, argv, message in cases:
            parsed, code, _, stderr = run(command, framework, argv)
            assert code == 2 and parsed is None, (argv, stderr)
            assert assert_one_error_line(f"python -m mnist_{framework}.{command}", stderr).startswith(message), (
                argv,
                stderr,
            )
        # A creatable --out-dir passes, and is left for the trainer to create under its lock.
        config = check_command_line(
            "train",
            framework,
            ["--out-dir", places["missing_deeper"], "--tensorboard", places["missing"], "--profile", places["missing"]],
        )
        assert config.out_dir == Path(places["missing_deeper"])
        assert config.tensorboard == config.profile == Path(places["missing"])
    assert listing(root) == before and not any(tmp_path.iterdir())


def as_unprivileged(function: Callable[[], str | None]) -> str | None:
    """`function()`'s result as a user who cannot write where its mode bits forbid: root ignores them, so
    as root the call runs in a forked child that drops to the user nobody (no exec: the Python here may
    live where nobody cannot read it)."""
    if os.geteuid() != 0:
        return function()
    read, write = os.pipe()
    with warnings.catch_warnings():  # JAX's threads: the child runs only path checks and exits, under an alarm
        warnings.simplefilter("ignore", RuntimeWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            signal.alarm(30)  # a child stuck on a lock a thread held at fork time dies, and the test fails, not hangs
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(function()).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as answer:
        result = answer.read()
    assert os.waitpid(pid, 0)[1] == 0, "the unprivileged child failed"
    return json.loads(result)


def test_an_out_dir_whose_nearest_existing_folder_is_not_writable_is_refused():
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)  # searchable by the unprivileged user, not writable
        locked, shared = Path(folder) / "locked", Path(folder) / "shared"
        locked.mkdir()
        shared.mkdir()
        locked.chmod(0o555)
        shared.chmod(0o777)
        try:
            assert (
                as_unprivileged(lambda: out_dir_problem(locked / "run" / "deeper"))
                == f"cannot be created: {locked} is not writable"
            )
            assert as_unprivileged(lambda: out_dir_problem(locked)) == "is not writable"
            assert as_unprivileged(lambda: out_dir_problem(shared / "run" / "deeper")) is None
            assert not any(locked.iterdir()) and not any(shared.iterdir())
        finally:
            locked.chmod(0o755)


# --- the real commands ------------------------------------------------------------------------------------------------


def python_m(module: str, *argv: str, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, set[str], float]:
    """``python -X importtime -m MODULE ARGV``: the result (stderr without the import-time lines), the top-level
    packages it imported, and its wall time."""
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    seconds = time.perf_counter() - start
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    imported.discard("imported package")  # the header
    result.stderr = "".join(
        line for line in result.stderr.splitlines(keepends=True) if not line.startswith("import time:")
    )
    return result, imported, seconds


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("train", ["--epochs", "x"], "argument --epochs: expected a positive integer, got 'x'"),
        ("evaluate", ["--weights", "missing.safetensors"], "argument --weights: missing.safetensors does not exist"),
        ("predict", ["missing.png"], "argument IMAGE: missing.png does not exist"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_commands_refuse_bad_flags_before_importing_torch_or_jax(framework, command, argv, message):
    result, imported, seconds = python_m(f"mnist_{framework}.{command}", *argv)
    assert result.returncode == 2 and not result.stdout
    assert assert_one_error_line(f"python -m mnist_{framework}.{command}", result.stderr).startswith(message)
    assert not imported & HEAVY, sorted(imported & HEAVY)
    assert "argparse" in imported  # the import-time lines were read: the check above is not vacuous
    print(f"python -m mnist_{framework}.{command} {' '.join(argv)}: {seconds:.2f}s")


@pytest.mark.e2e
def test_real_argv_with_a_newline_or_an_unwritable_out_dir_is_one_line_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_text("")
    result, imported, _ = python_m("mnist_torch.train", "--out-dir", "file/run", cwd=tmp_path)
    assert result.returncode == 2 and not imported & HEAVY
    assert assert_one_error_line("python -m mnist_torch.train", result.stderr) == (
        "argument --out-dir: file/run cannot be created: file is a file, not a folder"
    )
    result, imported, _ = python_m("mnist_jax.train", "--out-dir", "new", "--épochs\n2", cwd=tmp_path)
    assert result.returncode == 2 and not imported & HEAVY
    assert assert_one_error_line("python -m mnist_jax.train", result.stderr) == r"unrecognized arguments: --épochs\n2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.e2e
def test_valid_command_lines_pass_the_check_and_reach_the_command(tmp_path):
    """The ``__main__`` check lets a good command line through to main(), which imports the framework and runs:
    here as far as the empty checkpoint folder, whose own one-line error (exit status 1) is the command's."""
    commands = {
        "mnist_torch.predict": [str(REPO / "docs" / "seven.png"), "--checkpoint", str(tmp_path)],
        "mnist_jax.evaluate": ["--checkpoint", str(tmp_path)],
    }
    processes = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, *argv], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for module, argv in commands.items()
    }
    for module, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 1, stderr
        assert re.fullmatch(
            rf"error: no checkpoint in {re.escape(str(tmp_path))} \(.*\); train one with `python -m "
            rf"{module.split('.')[0]}\.train`.*\n",
            stderr,
        ), stderr


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_configuration_not_from_the_command_line_runs_with_its_frameworks_own_defaults(framework, tmp_path):
    """`TrainConfig.for_framework` gives a TrainConfig built in code what the command line gives: the framework's
    --mode or --api at its default, the other framework's left None, out_dir at runs/<framework>; what is set
    stays as set."""
    default = TrainConfig().for_framework(framework)
    parsed = parse_config(framework, [])
    assert (default.mode, default.api, default.out_dir) == (parsed.mode, parsed.api, parsed.out_dir)
    assert (default.mode, default.api) == (("eager", None) if framework == "torch" else (None, "linen"))
    chosen = {"mode": "compile"} if framework == "torch" else {"api": "nnx-jit"}
    kept = TrainConfig(out_dir=tmp_path, **chosen).for_framework(framework)
    assert kept == TrainConfig(out_dir=tmp_path, **chosen)
