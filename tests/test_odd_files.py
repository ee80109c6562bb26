"""Odd files: weights of another dtype, and FIFOs, device files and dangling symlinks where a command expects a
file or a folder; each ends in one ``error:`` line (or a note, for weights it converts), never a traceback.

The commands run for real, in subprocesses, marked e2e (`pytest -m e2e`, as .ci/run runs them); the refusals
that come before the imports are also checked in-process in the default run, through
`mnist_common.cli.check_command_line`. The only stderr lines tolerated besides the one line are argparse's usage
block above a command-line error (exit status 2), which every refusal of a flag or path prints (`mnist_common.cli`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mnist_common.cli import check_command_line
from mnist_common.weights import WeightsError, read_weights
from mnist_torch.model import CNN
from tests.refusals import argparse_line, one_line, refused_in_process, run

FRAMEWORKS = ["torch", "jax"]


def state_dict_as(dtype: torch.dtype, path: Path) -> Path:
    """The CNN's own state_dict (the trained names and shapes), cast to `dtype`, as safetensors."""
    torch.manual_seed(0)
    save_file({name: t.to(dtype).contiguous() for name, t in CNN().state_dict().items()}, str(path))
    return path


# --- 1. weights of the wrong dtype ------------------------------------------------------------------------------------


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


# --- 2. FIFOs, device files, dangling symlinks, refused up front -----------------------------------------------------


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
