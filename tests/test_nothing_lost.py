"""Nothing lost, ever: a folder holding a run is resumed, replaced on request (--overwrite) or refused in one
line; a run of the other framework never mixes with it; a run whose out-dir vanished stops instead of
recreating it; every signal that ends a command says so in one line, exits 128 + N and leaves no lock."""

from __future__ import annotations

import ast
import errno
import functools
import hashlib
import io
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_common import interrupts, outdir
from mnist_common.cli import build_model_parser, build_parser, parse_config
from mnist_common.files import write_atomically
from mnist_common.outdir import LOCK_FILE, out_dir_lock
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax import predict as jax_predict
from mnist_jax import train as jax_train
from mnist_torch import predict as torch_predict
from mnist_torch import train as torch_train

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = ["torch", "jax"]
OTHER = {"torch": "jax", "jax": "torch"}
NAME = {"torch": "PyTorch", "jax": "JAX"}
TRAINERS = {"torch": torch_train, "jax": jax_train}
PREDICTORS = {"torch": torch_predict, "jax": jax_predict}
CHECKPOINT = {"torch": "checkpoint.pt", "jax": "checkpoint.msgpack"}
TINY = ["--epochs", "1", "--train-size", "256", "--quiet"]
DIGIT = REPO / "docs" / "seven.png"


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def refusal(framework: str, argv: list[str]) -> str:
    """The one error line the trainer exits with."""
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main(argv)
    message = str(exit_info.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture
def copied_run(trained_run, tmp_path):
    """``copied_run(framework)``: a copy of the session's finished run of that framework, free to change."""

    def copy(framework: str) -> Path:
        out_dir = tmp_path / f"{framework}-copy"
        shutil.copytree(trained_run(framework), out_dir)
        return out_dir

    return copy


# --- A. results lost -----------------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_second_run_into_a_finished_run_is_refused_and_changes_nothing(framework, copied_run):
    out_dir = copied_run(framework)
    before = digest(out_dir)
    message = refusal(framework, [*TINY, "--out-dir", str(out_dir)])
    assert message.startswith(f"error: {out_dir} already holds a {NAME[framework]} run (metrics.json, "), message
    assert "pass --resume to continue it, --overwrite to replace it, or another --out-dir" in message
    assert digest(out_dir) == before and not (out_dir / LOCK_FILE).exists()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_of_the_other_framework_is_refused_with_and_without_resume(framework, copied_run):
    out_dir = copied_run(OTHER[framework])
    before = digest(out_dir)
    for extra in ([], ["--resume"]):
        message = refusal(framework, [*TINY, "--out-dir", str(out_dir), *extra])
        assert message.startswith(f"error: {out_dir} holds a {NAME[OTHER[framework]]} run ("), message
        assert f"which a {NAME[framework]} run can neither resume nor share" in message, message
        assert "--overwrite to replace that run" in message
    assert digest(out_dir) == before


def test_resume_without_its_checkpoint_beside_results_says_overwrite_not_drop_resume(copied_run):
    out_dir = copied_run("torch")
    (out_dir / CHECKPOINT["torch"]).unlink()
    message = refusal("torch", [*TINY, "--out-dir", str(out_dir), "--resume"])
    assert "but no checkpoint.pt to resume from; pass --overwrite instead of --resume" in message, message


def test_resume_and_overwrite_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config("torch", ["--resume", "--overwrite"])
    assert exit_info.value.code == 2
    assert "error: pass either --resume (continue the run in --out-dir) or --overwrite" in capsys.readouterr().err


def test_the_command_that_continues_an_interrupted_overwrite_is_accepted():
    """An --overwrite run interrupted after a checkpoint is continued by the same flags with --resume instead of
    --overwrite: the two together are refused, and the run it replaced is already gone."""
    line = interrupts.resume_command("mnist_jax.train", ["--epochs", "2", "--overwrite", "--out-dir", "d"])
    assert line == "python -m mnist_jax.train --epochs 2 --out-dir d --resume"
    config = parse_config("jax", shlex.split(line)[3:])
    assert config.resume and not config.overwrite


@pytest.mark.e2e  # a real epoch, its evaluation and its plots: a longer real run
def test_overwrite_replaces_a_run_of_the_other_framework_whole(copied_run, mnist, monkeypatch):
    """No JAX checkpoint is left beside the PyTorch run that replaced the JAX one: the folder is one run."""
    out_dir = copied_run("jax")
    monkeypatch.setattr(torch_train, "load_mnist", lambda data_dir: mnist)  # this session's copy, not a reload
    torch_train.main([*TINY, "--out-dir", str(out_dir), "--overwrite"])
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(
        ["metrics.json", "checkpoint.pt", WEIGHTS_FILE, "curves.png", "confusion.png", "misclassified.png"]
    )
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["framework"] == "torch" and metrics["config"]["overwrite"] is True


def test_a_vanished_out_dir_is_never_recreated_and_a_new_runs_lock_is_left_alone(tmp_path):
    out_dir = tmp_path / "run"
    with out_dir_lock(out_dir, "test"):
        write_atomically(out_dir / "metrics.json", lambda p: p.write_text("{}"))
        shutil.rmtree(out_dir)
        with pytest.raises(outdir.OutDirLost, match=rf"^{re.escape(str(out_dir))} or its \.lock was removed while"):
            write_atomically(out_dir / "metrics.json", lambda p: p.write_text("{}"))
        assert not out_dir.exists()  # not recreated, lock-less, for a second run to write into unrefused
        out_dir.mkdir()
        (out_dir / LOCK_FILE).write_text("pid 1, another run\n")  # a second run took the recreated folder
        with pytest.raises(outdir.OutDirLost):
            outdir.check_held(out_dir)
    assert (out_dir / LOCK_FILE).read_text() == "pid 1, another run\n"  # the first run's exit left it alone


@pytest.mark.e2e  # the process boundary is the subject: a folder removed under a running trainer
def test_a_trainer_whose_out_dir_is_removed_stops_in_one_line_without_recreating_it(tmp_path):
    out_dir = tmp_path / "run"
    args = ["--epochs", "50", "--train-size", "1280", "--quiet", "--out-dir", str(out_dir)]
    run = subprocess.Popen(
        [sys.executable, "-m", "mnist_torch.train", *args], stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    deadline = time.monotonic() + 60
    while not (out_dir / CHECKPOINT["torch"]).exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.01)
    shutil.rmtree(out_dir)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    assert stderr.strip().startswith(f"error: {out_dir} or its .lock was removed while this run was writing"), stderr
    assert len(stderr.strip().splitlines()) == 1 and not out_dir.exists(), stderr


class ClosedAfter(io.StringIO):
    """A standard output whose reader went away after `lines` lines (``| head -1``: 1): every later write fails as
    a write into a pipe with no reader does."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines = lines

    def write(self, text: str) -> int:
        if self.getvalue().count("\n") >= self.lines:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)


def closed_output(framework: str, argv: list[str], during: str, epoch: int) -> re.Pattern:
    """The one line a run whose standard output was closed ends with: what was closed and when, the checkpoint kept
    and the command that continues the run."""
    resume = interrupts.resume_command(f"mnist_{framework}.train", argv)
    out_dir = Path(argv[argv.index("--out-dir") + 1])
    return re.compile(
        rf"error: the standard output was closed {during} \(Broken pipe: the program reading it, such as `head`, "
        rf"exited\), so the run stopped; kept the checkpoint after epoch {epoch} in "
        rf"{re.escape(str(out_dir / CHECKPOINT[framework]))}; continue with: {re.escape(resume)}"
    )


#: A run of two short epochs, each evaluated on a few test images: what a closed output stops.
SHORT = ["--train-size", "256", "--test-size", "500"]


@pytest.fixture
def session_data(monkeypatch, mnist, jax_mnist):
    """The trainers load this session's MNIST (conftest's), not their own copy again: what is tested follows it."""
    monkeypatch.setattr(torch_train, "load_mnist", lambda data_dir: mnist)
    monkeypatch.setattr(jax_train, "load_mnist", lambda data_dir: jax_mnist)


@pytest.mark.parametrize("framework", ["torch", pytest.param("jax", marks=pytest.mark.e2e)])  # JAX: a compilation
def test_a_closed_standard_output_stops_the_run_naming_it_and_the_resume_command(
    framework, tmp_path, monkeypatch, session_data
):
    """`python -m mnist_<framework>.train | head -1`: not "cannot write the out-dir, free some space", but the
    closed output, the checkpoint kept and the command that continues (the e2e test below runs it)."""
    argv = ["--epochs", "2", *SHORT, "--out-dir", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "stdout", ClosedAfter(1))
    message = refusal(framework, argv)
    epoch = 1 if framework == "jax" else 2  # JAX's first line says what it compiled; PyTorch's eager, epoch 1's
    assert closed_output(framework, argv, f"after epoch {epoch}/2", epoch).fullmatch(message), message
    assert (tmp_path / "run" / CHECKPOINT[framework]).is_file() and not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_standard_output_closed_before_the_final_line_says_every_file_was_written(
    tmp_path, monkeypatch, session_data
):
    argv = ["--epochs", "1", *SHORT, "--quiet", "--out-dir", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "stdout", ClosedAfter(0))
    message = refusal("torch", argv)
    assert closed_output("torch", argv, "after writing metrics.json, the weights and the plots", 1).fullmatch(
        message
    ), message
    assert {"metrics.json", WEIGHTS_FILE, "curves.png"} <= {p.name for p in (tmp_path / "run").iterdir()}


@pytest.mark.e2e  # a real pipe, closed by its reader, and the interpreter's exit after it
def test_a_trainer_piped_into_head_stops_in_one_line_and_resumes(tmp_path):
    argv = ["--epochs", "3", "--train-size", "1280", "--test-size", "1000", "--out-dir", str(tmp_path / "run")]
    run = subprocess.Popen(
        [sys.executable, "-m", "mnist_jax.train", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert run.stdout.readline().startswith("compiled train and eval steps")
    run.stdout.close()  # `head -1` exits
    stderr = run.stderr.read()
    assert run.wait(timeout=120) == 1, stderr
    assert len(stderr.splitlines()) == 1 and closed_output("jax", argv, "after epoch 1/3", 1).fullmatch(
        stderr.strip()
    ), stderr
    resumed = subprocess.run(
        [sys.executable, *shlex.split(interrupts.resume_command("mnist_jax.train", argv))[1:]],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed from "), resumed.stderr
    assert len(json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"]) == 3


# --- B. signals ----------------------------------------------------------------------------------------


@pytest.mark.e2e  # real signals to a real trainer
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1])
def test_every_ending_signal_is_one_line_its_status_and_no_stale_lock(signum, tmp_path):
    """Once the out-dir is locked (the run is loading data or preparing its step), the signal ends the run as
    SIGINT does: one line naming it, 128 + N, the lock released."""
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mnist_torch.train",
            "--epochs",
            "20",
            "--train-size",
            "1280",
            "--out-dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / LOCK_FILE).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert run.returncode == 128 + signum, stderr
    last = stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"interrupted .*\({name}\); .*", last) and "Traceback" not in stderr, stderr
    assert not (tmp_path / LOCK_FILE).exists() and not list(tmp_path.glob("*.partial"))


SWALLOWING = """
import gc, os, signal, time
from mnist_common import interrupts
interrupts.install("python -c ...")
fired = []
def callback(phase, info):  # the signal's handler runs in here, inside the garbage collector's callback
    if not fired:
        fired.append(os.kill(os.getpid(), signal.SIGTERM))
        sum(range(1000))
gc.callbacks.append(callback)
try:
    with interrupts.catching():
        interrupts.now("during epoch 1/1")
        gc.collect()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sum(range(100))
        print("ran on after the signal")
except interrupts.Interrupted as err:
    interrupts.report(err, None)
"""


def test_a_signal_landing_in_a_garbage_collector_callback_still_stops_the_run():
    """Python prints and drops an exception raised in a gc callback (JAX registers one, ``_xla_gc_callback``): a
    SIGINT landing there once let a JAX run train on to exit 0 (seen in CI). It must stop the run all the same, in
    one line. No framework: the callback is this script's, so the signal lands there every time."""
    done = subprocess.run([sys.executable, "-c", SWALLOWING], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, (done.stdout, done.stderr)
    assert done.stdout == "" and "Exception ignored" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "interrupted during epoch 1/1 (SIGTERM); no epoch was complete, so nothing was kept; "
        "run the same command again to start afresh"
    ]


LEFT_AT_EXIT = """
import atexit
from mnist_common import interrupts
interrupts.install("python -c ...")
atexit.register(print, "exit handler ran")  # as PyTorch and JAX register theirs, after the command's install
class Cycle:
    def __del__(self):
        print("garbage collected at exit")
cycle = Cycle()
cycle.itself = cycle
del cycle
"""


def test_a_commands_exit_runs_the_exit_handlers_and_skips_the_final_garbage_collection():
    """Every command (`interrupts.install`) freezes the heap once the exit handlers have run
    (`interrupts.skip_final_collection`): the handlers still run, the interpreter's final collections do not.
    Without the freeze this script prints both lines (measured), so a dropped freeze fails here."""
    done = subprocess.run([sys.executable, "-c", LEFT_AT_EXIT], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "exit handler ran\n", "")


# --- C. messages and flags -----------------------------------------------------------------------------

PARSERS = [
    build(framework)
    for build in (build_parser, *(functools.partial(build_model_parser, c) for c in ("predict", "evaluate")))
    for framework in FRAMEWORKS
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.prog)
def test_help_states_each_default_once_and_never_none(parser):
    text = " ".join(parser.format_help().split())
    assert "(default: None)" not in text
    assert not re.search(r"\(default: [^)]*\) \(default:", text), text


def test_an_abbreviated_flag_is_refused_not_taken_for_the_long_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config("torch", ["--epoch", "3"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --epoch 3" in capsys.readouterr().err


def test_every_argparse_parser_in_the_project_refuses_abbreviations():
    """Every ``argparse.ArgumentParser(...)`` call in the repository passes allow_abbrev=False (the commands'
    own parsers are `mnist_common.cli.Parser`, which does)."""
    missing = []
    for path in [*REPO.glob("*/*.py"), *REPO.glob("*.py")]:
        if ".venv" in path.parts or path.parts[-2] == "tests":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "argparse.ArgumentParser":
                flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if flags.get("allow_abbrev") != "False":
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert missing == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_takes_weights_as_evaluate_does(framework, trained_run, capsys):
    weights = trained_run(OTHER[framework]) / WEIGHTS_FILE  # the other framework's file: the shared layout
    PREDICTORS[framework].main([str(DIGIT), "--weights", str(weights), "--json"])
    answer = json.loads(capsys.readouterr().out)
    assert answer[0]["digit"] == 7
    with pytest.raises(SystemExit) as exit_info:
        PREDICTORS[framework].main([str(DIGIT), "--weights", str(weights), "--checkpoint", str(weights.parent)])
    assert exit_info.value.code == 2 and "pass either --weights FILE or --checkpoint DIR" in capsys.readouterr().err


def test_reproducibility_says_a_file_where_a_folder_should_be_is_a_file(tmp_path):
    from benchmarks.reproducibility import unwritable

    (tmp_path / "file").write_text("")
    problem = unwritable(tmp_path / "file" / "sub" / "repro.json")
    assert problem.startswith(f"{tmp_path / 'file'} is a file, not a folder"), problem


def test_reproducibility_refuses_a_case_the_device_lacks_before_training(tmp_path, capsys):
    from benchmarks.reproducibility import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "repro.json"), "--cases", "jax,torch_cudagraph"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].endswith(
        "argument --cases: torch_cudagraph not among cpu's cases jax, torch_eager"
    ), err
    assert not (tmp_path / "repro.json").exists()


# --- D. the clone stays clean --------------------------------------------------------------------------


def test_gitignore_ignores_no_tracked_file_and_the_readme_writes_only_ignored_files():
    tracked_but_ignored = subprocess.run(
        ["git", "ls-files", "-ci", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert tracked_but_ignored == ""
    readme = (REPO / "README.md").read_text()
    outs = re.findall(r"--out (\S+)", readme)
    assert outs, "the README's compare example names its --out"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *outs, "build/lib/x.py"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert ignored == [*outs, "build/lib/x.py"]


def test_ab_warns_of_a_busy_machine_as_the_suite_does(tmp_path, monkeypatch, capsys):
    """The warning is `conditions.load_warning`'s own, from a load average over the core count; the rounds
    themselves (minutes) are not what is tested, so `run` returns a baseline row at once."""
    from benchmarks import conditions
    from experiments import ab

    monkeypatch.setattr(conditions.os, "getloadavg", lambda: (1000.0, 1000.0, 1000.0))
    monkeypatch.setattr(ab, "run", lambda *args: {"rows": [{"variant": "jax_jit"}]})
    out = tmp_path / "ab.json"
    ab.main(["jax_jit", "jax_nnx_split", "--out", str(out), "--bench-allow-dirty"])
    err = capsys.readouterr().err
    assert err.startswith("warning: the machine is busy before the benchmarks start"), err
    assert json.loads(out.read_text())["load_warning"] == err.strip()


def test_the_suite_refuses_a_dirty_tree_without_a_doubled_error_prefix(monkeypatch):
    """pytest prints ``ERROR: `` before a UsageError's message: the refusal must not bring its own ``error: ``."""
    import benchmarks.conftest as bench_conftest
    from benchmarks import conditions

    class Options:  # the few options pytest_configure reads, as pytest's config answers them
        def getoption(self, name):
            return {"bench_threads": None}.get(name, False)

    dirty = {"commit": "0" * 40, "dirty": True, "changed_files": ["x.py"], "commit_source": "git"}
    monkeypatch.setattr(conditions, "provenance", lambda: dirty)
    monkeypatch.setattr(conditions, "set_threads", lambda count: 1)  # this test process keeps its own threads
    with pytest.raises(pytest.UsageError) as error:
        bench_conftest.pytest_configure(Options())
    assert str(error.value).startswith("the working tree differs from commit 000000000000"), str(error.value)


#: `python -m benchmarks.report`'s arguments (files in a folder holding copies of a committed results file, a.json and
#: b.json) that would make it write over one of the files it reads: the merged stages under the first one's name (the
#: default), or a name that makes its .md one of them.
REPORT_OVER_ITS_INPUT = {
    "the merged stages under the first one's name": (["a.json", "b.json"], [], "a.json"),
    "its markdown over its input": (["a.md"], [], "a.md"),
    "the merged stages under a name given": (["a.json", "b.json"], ["--name", "b"], "b.json"),
}


@pytest.mark.parametrize("case", REPORT_OVER_ITS_INPUT)
def test_the_benchmark_report_refuses_to_write_over_a_file_it_reads(case, tmp_path, capsys):
    from benchmarks import report

    results = (REPO / "benchmarks" / "results" / "cpu-2core-scaling.json").read_bytes()
    names, flags, written_over = REPORT_OVER_ITS_INPUT[case]
    for name in names:
        (tmp_path / name).write_bytes(results)
    with pytest.raises(SystemExit) as exit_info:
        report.main([str(tmp_path / name) for name in names] + flags)
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message, message
    assert message.startswith(f"error: {tmp_path / written_over} is one of the results read, and the report would ")
    assert message.endswith("; pass --name or --out-dir so that the report's files are new ones"), message
    assert capsys.readouterr() == ("", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # nothing written, nothing replaced
    assert all((tmp_path / name).read_bytes() == results for name in names)
