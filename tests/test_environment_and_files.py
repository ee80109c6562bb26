"""The environment and odd files (issue 19, item 5): each mistake ends in one ``error:`` line, never a traceback.

JAX_PLATFORMS naming an absent platform, a bad JAX_NUM_CPU_DEVICES, a malformed XLA_FLAGS, a compilation
cache folder that cannot be written, weights of the wrong dtype, and paths that are FIFOs, device files or
dangling symlinks. The commands run for real, in subprocesses, on real MNIST, marked e2e (`pytest -m e2e`, as
.ci/run runs them); the refusals that come before the imports are also checked in-process in the default run,
through `mnist_common.cli.check_command_line`, what each command's ``__main__`` calls first.

The only stderr lines tolerated besides the one line are argparse's usage block above a command-line error
(exit status 2), which every refusal of a flag or path prints (`mnist_common.cli`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mnist_common.cli import check_command_line
from mnist_common.weights import WeightsError, read_weights
from mnist_jax import compilation_cache
from mnist_jax.runtime import XlaFlagsError, deterministic
from mnist_torch.data import MNIST_MEAN, MNIST_STD
from mnist_torch.model import CNN

REPO = Path(__file__).resolve().parents[1]
FRAMEWORKS = ["torch", "jax"]


def run(
    module: str, *args: object, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m module args`` with `env` added to this environment; a hang (a FIFO opened) fails the test."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def one_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    """The single stderr line of a refused command, checked: its exit status and that nothing else was printed."""
    lines = result.stderr.splitlines()
    assert result.returncode == status, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def argparse_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a command-line refusal (exit status 2): argparse's usage block, then one error line."""
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("usage: ") and all(line.startswith(" ") for line in lines[1:-1]), result.stderr
    assert ": error: " in lines[-1] and "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def refused_in_process(capsys, command: str, framework: str, *args: object) -> str:
    """`argparse_line` of `check_command_line` refusing ``python -m mnist_<framework>.<command> ARGS``, in-process."""
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(command, framework, [str(arg) for arg in args])
    out, err = capsys.readouterr()
    return argparse_line(subprocess.CompletedProcess([], exit_info.value.code, out, err))


def jax_environment_refusal(capsys, command: str, *args: object) -> str:
    """The one ``error:`` line (exit status 1) `check_command_line` ends a JAX command with, in-process."""
    with pytest.raises(SystemExit) as exit_info:
        check_command_line(command, "jax", [str(arg) for arg in args])
    message = exit_info.value.code  # a string: Python prints it on stderr and exits with status 1
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    assert capsys.readouterr() == ("", "")
    return message


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, mnist) -> Path:
    """The first MNIST test image as a PNG, as a user would pass it to predict."""
    pixels = (mnist.test.images[0, 0].numpy() * MNIST_STD + MNIST_MEAN) * 255
    path = tmp_path_factory.mktemp("digit") / "seven.png"
    Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8)).save(path)
    return path


def state_dict_as(dtype: torch.dtype, path: Path) -> Path:
    """The CNN's own state_dict (the trained names and shapes), cast to `dtype`, as safetensors."""
    torch.manual_seed(0)
    save_file({name: t.to(dtype).contiguous() for name, t in CNN().state_dict().items()}, str(path))
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
        "train": ["--epochs", "1", "--train-size", "128", "--out-dir", tmp_path / "out"],
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
        run(
            "mnist_jax.train",
            "--epochs",
            "1",
            "--train-size",
            "128",
            "--out-dir",
            tmp_path / "out",
            env={"XLA_FLAGS": "xla_gpu_autotune_level=0"},
        )
    )
    assert "XLA_FLAGS holds 'xla_gpu_autotune_level=0'" in line and "starting with --" in line


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
        "--epochs",
        "1",
        "--train-size",
        "128",
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


# --- 5. weights of the wrong dtype ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, name", [(torch.int32, "int32"), (torch.bool, "bool"), (torch.uint8, "uint8"), (torch.int64, "int64")]
)
def test_integer_and_boolean_weights_are_refused_naming_the_tensor(dtype, name, tmp_path):
    path = state_dict_as(dtype, tmp_path / "w.safetensors")
    with pytest.raises(
        WeightsError, match=rf"conv1\.bias \({name}\), conv1\.weight \({name}\), .* and 5 more; expected float32"
    ):
        read_weights(path)


@pytest.mark.parametrize(
    "dtype, name", [(torch.float16, "float16"), (torch.bfloat16, "bfloat16"), (torch.float64, "float64")]
)
def test_other_float_weights_are_converted_with_one_note(dtype, name, tmp_path, capsys):
    path = state_dict_as(dtype, tmp_path / "w.safetensors")
    arrays = read_weights(path)
    torch.manual_seed(0)
    for key, tensor in CNN().state_dict().items():
        assert arrays[key].dtype == np.float32
        np.testing.assert_array_equal(arrays[key], tensor.to(dtype).to(torch.float32).numpy())
    assert capsys.readouterr().err.splitlines() == [
        f"note: {path} holds {name} weights (8 of 8 tensors); converted to float32"
    ]


@pytest.mark.e2e
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_int32_weights_end_evaluate_in_one_line(framework, tmp_path):
    path = state_dict_as(torch.int32, tmp_path / "int.safetensors")
    line = one_line(run(f"mnist_{framework}.evaluate", "--weights", path))
    assert f"{path} holds tensors that are not floating-point weights: conv1.bias (int32)" in line
    assert "expected float32" in line


@pytest.mark.e2e
def test_float16_weights_evaluate_with_one_note(tmp_path):
    path = state_dict_as(torch.float16, tmp_path / "half.safetensors")
    result = run("mnist_jax.evaluate", "--weights", path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"note: {path} holds float16 weights (8 of 8 tensors); converted to float32"]
    assert "test acc" in result.stdout and "(" in result.stdout and "/10000)" in result.stdout


# --- 6. FIFOs, device files, dangling symlinks, refused up front -----------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fifos_devices_and_dangling_symlinks_are_refused_by_the_check_in_process(framework, tmp_path, capsys):
    """What the e2e tests below run as real commands: a FIFO as weights (only stat'ed: opened, it would wait for a
    writer, and weights are checked by their length first), a device file and dangling symlinks, refused by the
    command-line check with argparse's usage and one line. A FIFO as IMAGE is input (``<(cat x.png)``), admitted."""
    fifo = tmp_path / "digit.png"
    os.mkfifo(fifo)
    check_command_line("predict", framework, [str(fifo)])  # admitted without opening it
    line = refused_in_process(capsys, "predict", framework, "/dev/null")
    assert "argument IMAGE: /dev/null is not a regular file (it is a character device)" in line
    for path, kind in [(fifo, "a FIFO, a named pipe"), (Path("/dev/null"), "a character device")]:
        line = refused_in_process(capsys, "evaluate", framework, "--weights", path)
        assert f"argument --weights: {path} is not a regular file (it is {kind})" in line
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    for out_dir in (link, link / "run"):
        line = refused_in_process(capsys, "train", framework, "--out-dir", out_dir)
        assert f"argument --out-dir: {out_dir} " in line
        assert f"a symlink to {tmp_path / 'gone'}, which does not exist" in line
    assert not (tmp_path / "gone").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_refuses_a_device_file_as_a_picture_without_opening_it(framework, tmp_path):
    line = argparse_line(run(f"mnist_{framework}.predict", "/dev/zero", timeout=30))  # opened, it would never end
    assert "argument IMAGE: /dev/zero is not a regular file (it is a character device)" in line


@pytest.mark.e2e
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("special, kind", [("fifo", "a FIFO, a named pipe"), ("/dev/null", "a character device")])
def test_evaluate_refuses_a_fifo_or_device_as_weights(framework, special, kind, tmp_path):
    path = Path(special) if special.startswith("/") else tmp_path / "w.safetensors"
    if special == "fifo":
        os.mkfifo(path)
    line = argparse_line(run(f"mnist_{framework}.evaluate", "--weights", path, timeout=30))
    assert f"argument --weights: {path} is not a regular file (it is {kind})" in line


def test_read_weights_refuses_a_fifo_in_process(tmp_path):
    os.mkfifo(tmp_path / "w.safetensors")
    with pytest.raises(WeightsError, match="is not a regular file .it is a FIFO"):
        read_weights(tmp_path / "w.safetensors")


@pytest.mark.e2e
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("below", [False, True])
def test_dangling_symlink_out_dir_is_refused_up_front(framework, below, tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone")
    out_dir = link / "run" if below else link
    line = argparse_line(run(f"mnist_{framework}.train", "--out-dir", out_dir, timeout=30))
    assert (
        f"argument --out-dir: {out_dir} " in line and f"a symlink to {tmp_path / 'gone'}, which does not exist" in line
    )
    assert not (tmp_path / "gone").exists()
