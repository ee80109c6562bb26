"""The environment and the machine: each fault ends in one ``error:`` line saying what to do, never a traceback.

JAX_PLATFORMS naming an absent platform, a bad JAX_NUM_CPU_DEVICES, a malformed XLA_FLAGS, a compilation cache
folder that cannot be written; another program on the JAX coordinator's port, a memory limit too small for the
framework, a current folder deleted under the shell. The commands run for real, in subprocesses, on real MNIST,
marked e2e (`pytest -m e2e`, as .ci/run runs them); the refusals that come before the imports are also checked
in-process in the default run, through `mnist_common.cli.check_command_line`, what each command's ``__main__``
calls first.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from mnist_common.cli import check_command_line, parse_config
from mnist_jax import compilation_cache
from mnist_jax.runtime import XlaFlagsError, deterministic, xla_flags_problem
from mnist_torch import runtime as torch_runtime
from mnist_torch import train as torch_train
from mnist_torch.data import MNIST_MEAN, MNIST_STD
from tests.refusals import REPO, jax_environment_refusal, one_line, run
from tests.test_odd_files import state_dict_as

#: A training run as short as a refusal's test needs.
TINY_TRAIN = ["--epochs", "1", "--train-size", "256", "--quiet"]
#: One epoch of one batch: a JAX run that an environment problem refuses, or that is over in seconds.
ONE_BATCH = ["--epochs", "1", "--train-size", "128"]


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, mnist) -> Path:
    """The first MNIST test image as a PNG, as a user would pass it to predict."""
    pixels = (mnist.test.images[0, 0].numpy() * MNIST_STD + MNIST_MEAN) * 255
    path = tmp_path_factory.mktemp("digit") / "seven.png"
    Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8)).save(path)
    return path


# --- 1. JAX_PLATFORMS naming a platform this machine lacks ------------------------------------------------------------


def _gpu_visible() -> bool:
    return torch.cuda.is_available() or Path("/dev/nvidiactl").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("command, platforms", [("train", "cuda"), ("evaluate", "cuda"), ("predict", "nosuchplatform")])
def test_jax_platforms_absent_is_one_line(command, platforms, tmp_path, digit_png):
    if platforms == "cuda" and _gpu_visible():
        pytest.skip("a GPU is present: JAX_PLATFORMS=cuda is a platform this machine has")
    args = {
        "train": [*ONE_BATCH, "--out-dir", tmp_path / "out"],
        "evaluate": ["--weights", state_dict_as(torch.float32, tmp_path / "w.safetensors")],
        "predict": [digit_png],
    }[command]
    line = one_line(run(f"mnist_jax.{command}", *args, env={"JAX_PLATFORMS": platforms}))
    assert f"JAX_PLATFORMS={platforms}" in line and "cannot start" in line and "set JAX_PLATFORMS=cpu" in line
    assert not (tmp_path / "out").exists()  # the trainer stops before it takes its out-dir


# --- 2. JAX_NUM_CPU_DEVICES, refused before JAX is imported -----------------------------------------------------------


@pytest.mark.parametrize("value", ["abc", "0", "-1", "", "1.5"])
def test_bad_jax_num_cpu_devices_is_refused_by_the_check_in_process(value, monkeypatch, capsys):
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", value)
    line = jax_environment_refusal(capsys, "evaluate")
    assert f"JAX_NUM_CPU_DEVICES={value!r}" in line and "whole number of at least 1" in line


@pytest.mark.parametrize("command", ["train", "predict"])
def test_bad_jax_num_cpu_devices_is_refused_for_every_jax_command_in_process(command, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "abc")
    args = [REPO / "docs" / "seven.png"] if command == "predict" else ["--out-dir", tmp_path / "out"]
    assert "JAX_NUM_CPU_DEVICES='abc'" in jax_environment_refusal(capsys, command, *args)
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("value", ["abc", "0", "-1", "", "1.5"])
def test_bad_jax_num_cpu_devices_is_one_line_before_jax_starts(value):
    result = run("mnist_jax.evaluate", env={"JAX_NUM_CPU_DEVICES": value}, timeout=60)
    line = one_line(result)
    assert f"JAX_NUM_CPU_DEVICES={value!r}" in line and "whole number of at least 1" in line


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["train", "predict"])
def test_bad_jax_num_cpu_devices_is_refused_by_every_jax_command(command, digit_png, tmp_path):
    args = [digit_png] if command == "predict" else ["--out-dir", tmp_path / "out"]
    assert "JAX_NUM_CPU_DEVICES='abc'" in one_line(
        run(f"mnist_jax.{command}", *args, env={"JAX_NUM_CPU_DEVICES": "abc"})
    )
    assert not (tmp_path / "out").exists()


def test_good_jax_num_cpu_devices_passes_the_check(monkeypatch):
    monkeypatch.setenv("JAX_NUM_CPU_DEVICES", "2")
    assert check_command_line("evaluate", "jax", []).weights is None


# --- 3. XLA_FLAGS -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, after",
    [
        (None, "--xla_gpu_deterministic_ops=true"),
        ("--xla_cpu_enable_fast_math=false", "--xla_cpu_enable_fast_math=false --xla_gpu_deterministic_ops=true"),
        ("--xla_gpu_deterministic_ops=false", "--xla_gpu_deterministic_ops=false"),  # the user's wins, as written
        ("  --xla_gpu_deterministic_ops=true  ", "  --xla_gpu_deterministic_ops=true  "),
        ('--xla_dump_to="/tmp/a -b"', '--xla_dump_to="/tmp/a -b" --xla_gpu_deterministic_ops=true'),  # quoted: one word
    ],
)
def test_deterministic_adds_the_flag_only_when_the_user_did_not(value, after, monkeypatch):
    if value is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", value)
    with deterministic():
        assert os.environ["XLA_FLAGS"] == after
    assert os.environ.get("XLA_FLAGS") == value


@pytest.mark.parametrize(
    "value, token",
    [
        ("foo", "'foo'"),
        ("foo --xla_gpu_deterministic_ops=true", "'foo'"),
        ("--xla_cpu_enable_fast_math=false -xla_bad=1", "'-xla_bad=1'"),
    ],
)
@pytest.mark.parametrize("enabled", [True, False])
def test_malformed_xla_flags_are_refused_naming_the_token(value, token, enabled, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", value)
    with pytest.raises(XlaFlagsError, match=f"XLA_FLAGS holds {token}"), deterministic(enabled):
        pass
    assert os.environ["XLA_FLAGS"] == value


def test_a_flag_file_is_left_as_written_with_a_note(tmp_path, monkeypatch, capsys):
    flags = tmp_path / "flags"
    flags.write_text("--xla_cpu_enable_fast_math=false\n")
    monkeypatch.setenv("XLA_FLAGS", str(flags))
    with deterministic():
        assert os.environ["XLA_FLAGS"] == str(flags)
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 1 and note[0].startswith("note: XLA_FLAGS names the flag file") and "deterministic" in note[0]
    flags.write_text("--xla_gpu_deterministic_ops=true\n")
    with deterministic():
        assert os.environ["XLA_FLAGS"] == str(flags)
    assert capsys.readouterr().err == ""


@pytest.mark.e2e
def test_malformed_xla_flags_end_the_trainer_in_one_line(tmp_path):
    line = one_line(
        run("mnist_jax.train", *ONE_BATCH, "--out-dir", tmp_path / "out", env={"XLA_FLAGS": "xla_gpu_autotune_level=0"})
    )
    assert "XLA_FLAGS holds 'xla_gpu_autotune_level=0'" in line and "starting with --" in line


@pytest.mark.parametrize(
    "value, named",
    [
        ("--xla_no_such_flag=1", "--xla_no_such_flag=1"),
        ("--xla_cpu_enable_fast_math=false --xla_no_such_flag=1", "--xla_no_such_flag=1"),
        ("--xla_cpu_enable_fast_math=maybe", "xla_cpu_enable_fast_math"),
    ],
)
def test_an_xla_flag_this_xla_refuses_is_named_with_the_fix(value, named):
    """XLA ends the process with its own fatal log line on an unknown flag or value once its backend starts: a probe
    (a child process, the backend of this one untouched) finds it first and names it."""
    problem = xla_flags_problem(value)
    assert problem is not None and "\n" not in problem, problem
    assert problem.startswith("XLA_FLAGS holds ") and named in problem, problem
    assert problem.endswith("; remove or correct it in XLA_FLAGS, or unset XLA_FLAGS"), problem


def test_xla_flags_this_xla_knows_pass_the_check():
    assert xla_flags_problem("--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2") is None


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_unknown_xla_flag_ends_a_jax_command_in_one_line_naming_it(command, tmp_path):
    args = {
        "train": [*ONE_BATCH, "--out-dir", tmp_path / "out"],
        "evaluate": ["--weights", state_dict_as(torch.float32, tmp_path / "w.safetensors")],
    }[command]
    line = one_line(run(f"mnist_jax.{command}", *args, env={"XLA_FLAGS": "--xla_no_such_flag=1"}))
    assert line.startswith("error: XLA_FLAGS holds --xla_no_such_flag=1, which this XLA refuses"), line
    assert line.endswith("; remove or correct it in XLA_FLAGS, or unset XLA_FLAGS"), line
    assert not (tmp_path / "out").exists()  # refused before the trainer takes its out-dir


# --- 4. a compilation cache folder that cannot be written -------------------------------------------------------------


@pytest.fixture
def cache_enabled_in(tmp_path):
    """Turn JAX's persistent cache on in `directory` for one test, and back off (conftest's setting) after."""

    def enable(directory: Path) -> None:
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(directory))

    before = (
        jax.config.jax_enable_compilation_cache,
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    yield enable
    jax.config.update("jax_enable_compilation_cache", before[0])
    jax.config.update("jax_compilation_cache_dir", before[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[2])


def test_unwritable_cache_folder_is_one_note_then_no_cache(tmp_path, cache_enabled_in, capsys):
    (tmp_path / "a-file").write_text("")  # a file where a folder of the path should be: unwritable even for root
    cache_enabled_in(tmp_path / "a-file" / "xla")
    assert compilation_cache.use_compilation_cache() is None
    note = capsys.readouterr().err.splitlines()
    assert len(note) == 1 and note[0].startswith(
        f"note: the compilation cache folder {tmp_path / 'a-file' / 'xla'} "
        f"cannot be written (Not a directory); running without"
    )
    assert not jax.config.jax_enable_compilation_cache


def test_writable_cache_folder_is_used_and_left_clean(tmp_path, cache_enabled_in, capsys):
    cache_enabled_in(tmp_path / "xla")
    assert compilation_cache.use_compilation_cache() == tmp_path / "xla"
    assert list((tmp_path / "xla").iterdir()) == [] and capsys.readouterr().err == ""


@pytest.mark.e2e
def test_trainer_with_unwritable_cache_prints_one_note_not_warnings(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run(
        "mnist_jax.train",
        *ONE_BATCH,
        "--out-dir",
        tmp_path / "out",
        "--quiet",
        env={"JAX_ENABLE_COMPILATION_CACHE": "true", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "a-file" / "xla")},
        timeout=300,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith("note: the compilation cache folder"), (
        result.stderr
    )
    assert (tmp_path / "out" / "weights.safetensors").is_file()


# --- 4b. an Inductor cache folder that cannot be used --------------------------------------------------------------


@pytest.mark.parametrize("where", ["a file", "a folder inside a file"])
@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_an_unusable_inductor_cache_folder_names_its_variable_before_any_work(where, mode, tmp_path, monkeypatch):
    """Every PyTorch run loads Inductor (torch.use_deterministic_algorithms does), which makes its cache folder: one
    that is a file, or lies inside one, is named with TORCHINDUCTOR_CACHE_DIR, which fixes it, not as an --out-dir
    that cannot be written."""
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" if where == "a file" else tmp_path / "a-file" / "inductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(folder))
    with pytest.raises(SystemExit) as exit_info:
        torch_train.main(["--mode", mode, *TINY_TRAIN, "--out-dir", str(tmp_path / "out")])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message, message
    assert message.startswith(
        f"error: TORCHINDUCTOR_CACHE_DIR={folder}, the cache folder of PyTorch's compiler Inductor (which every run "
        f"loads), cannot be used ("
    ), message
    assert message.endswith(
        "; set TORCHINDUCTOR_CACHE_DIR to a folder you can write, or unset it for Inductor's default"
    ), message
    assert not (tmp_path / "out").exists()  # refused before the run takes its out-dir


def test_an_inductor_cache_folder_failing_while_compiling_is_named_not_the_out_dir(tmp_path, monkeypatch):
    """A write into Inductor's folder that fails later (a full disk) names that folder's variable too."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    config = parse_config("torch", ["--mode", "compile", "--out-dir", str(tmp_path / "out")])
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "inductor" / "fxgraph" / "a"))
    line = torch_runtime.failure(full, config)
    assert line.startswith(f"TORCHINDUCTOR_CACHE_DIR={tmp_path / 'inductor'}, the cache folder of PyTorch's "), line
    assert "(No space left on device)" in line and "--out-dir" not in line, line


# --- 5. faults of the machine: the coordinator's port taken, too little memory, the current folder gone ---------


def env() -> dict[str, str]:
    """This environment, with the repository importable from any current folder."""
    return {**os.environ, "PYTHONPATH": str(REPO)}


def assert_one_line(done: subprocess.CompletedProcess, status: int, start: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(start), lines[0]
    return lines[0]


@pytest.mark.e2e
def test_a_foreign_program_on_the_coordinator_port_stops_every_process_in_one_line(tmp_path):
    """Process 0 cannot listen on the port; process 1 connected to the foreign listener and, before the probe of
    `wait_for_coordinator`, ended in a C++ abort (status 134) after --dist-timeout. Both say so in one line."""
    out = tmp_path / "run"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        command = [sys.executable, "-m", "mnist_jax.train", "--num-processes", "2", "--quiet", "--epochs", "1"]
        command += ["--coordinator", f"localhost:{port}", "--dist-timeout", "20", "--out-dir", str(out)]
        processes = [
            subprocess.Popen(command + ["--process-id", str(index)], stderr=subprocess.PIPE, text=True, env=env())
            for index in (0, 1)
        ]
        errors = [process.communicate(timeout=120)[1] for process in processes]
    for index, (process, stderr) in enumerate(zip(processes, errors)):
        done = subprocess.CompletedProcess(process.args, process.returncode, None, stderr)
        what = "is taken by another program" if index == 0 else "is held by another program, not a JAX coordinator"
        line = assert_one_line(done, 1, f"error: process {index} of 2: port {port} of --coordinator localhost:{port}")
        assert what in line and line.endswith("or stop that program"), line
    assert not list(out.glob("*.lock"))  # nothing at all, as the run stops before its out-dir is locked


@pytest.mark.e2e
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_memory_limit_too_small_for_the_framework_is_one_line(framework, tmp_path):
    limit = 1 << 30  # 1 GiB of address space: Python starts, neither framework's libraries map
    # Set by the shell, as a user does: a preexec_fn would run Python in a child forked from this
    # multithreaded process (JAX's threads), which can deadlock.
    command = [sys.executable, "-m", f"mnist_{framework}.train", "--epochs", "1", "--out-dir", str(tmp_path / "run")]
    done = subprocess.run(
        ["bash", "-c", f'ulimit -v {limit // 1024} && exec "$@"', "bash", *command],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    line = assert_one_line(done, 1, "error: out of memory (")
    assert f"ulimit -v is {limit // 1024} KiB" in line and "ulimit -v unlimited" in line


@pytest.mark.e2e
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_deleted_current_folder_is_one_line(framework, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m mnist_{framework}.train --epochs 1'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env(), timeout=300)
    assert_one_line(done, 1, "error: the current folder no longer exists (deleted or moved away); cd into")
