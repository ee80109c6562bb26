"""Issue 34, "nothing lost, ever": files checked by their header before their bytes, and pictures of any shape.

Weights and checkpoints whose header declares more than the file holds, or more than this model needs, are
refused from the header, in one line, before any tensor is read; a checkpoint of another version names the field
it lacks or adds; one written with 64-bit JAX names its dtype. Every picture, of any size and aspect ratio, is
answered or refused in one line of its own; names with control characters stay on one line; a pipe is input.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_common.cli import check_command_line
from mnist_common.images import load_digits
from mnist_common.weights import EXPECTED_SHAPES, write_weights

#: Few examples per property, derandomized: the module joins the default test run, whose budget is tight.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def digit_picture(path, width: int = 224, height: int = 224) -> os.PathLike:
    """A dark bar on white paper, a '1' that predict reads as a digit."""
    pixels = np.full((height, width), 255, np.uint8)
    pixels[height // 5 : 4 * height // 5, 2 * width // 5 : 3 * width // 5] = 0
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def random_weights(path):
    rng = np.random.default_rng(0)
    return write_weights(path, {k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in EXPECTED_SHAPES.items()})


def one_line_each(message: str, count: int) -> list[str]:
    lines = message.splitlines()
    assert len(lines) == count, lines
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


# --- 2. pictures ---------------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=25)
@given(short=st.integers(1, 60), long=st.integers(1, 4000), tall=st.booleans())
def test_a_picture_of_any_size_and_aspect_ratio_is_answered_or_refused_and_the_others_answered(
    short, long, tall, tmp_path_factory
):
    folder = tmp_path_factory.mktemp("sizes")
    long = min(long, 1_000_000 // short)  # at most a megapixel: the pipeline's cost, not its reach
    width, height = (short, long) if tall else (long, short)
    odd = digit_picture(folder / f"{width}x{height}.png", width, height)
    good = digit_picture(folder / "good.png")
    digits, errors = load_digits([good, odd, good])
    assert len(digits) + len(errors) == 3 and set(errors) <= {1}
    assert all("\n" not in message and str(odd) in message for message in errors.values())


def test_a_strip_of_extreme_aspect_ratio_is_refused_in_one_line_naming_its_shape(tmp_path):
    strips = [digit_picture(tmp_path / f"{w}x{h}.png", w, h) for w, h in [(8, 5000), (5000, 10), (20, 3000)]]
    digits, errors = load_digits([*strips, digit_picture(tmp_path / "good.png")])
    assert len(digits) == 1 and sorted(errors) == [0, 1, 2]
    assert "the picture is 8x5000 pixels, a strip more than" in errors[0]


def predict_main(framework: str):
    if framework == "torch":
        from mnist_torch.predict import main
    else:
        from mnist_jax.predict import main
    return main


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_names_with_control_characters_are_quoted_on_one_line_in_answers_and_errors(framework, tmp_path, capsys):
    good = digit_picture(tmp_path / "a\nb.png")
    bad = tmp_path / "c\td\r.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(bad, format="PNG")  # a blank page: refused
    with pytest.raises(SystemExit) as exit_info:
        predict_main(framework)([str(good), str(bad), "--weights", str(random_weights(tmp_path / "w.safetensors"))])
    out = capsys.readouterr().out
    [answer] = out.splitlines()
    assert answer.startswith(repr(str(good)) + ": ")
    [error] = one_line_each(exit_info.value.code, 1)
    assert repr(str(bad)) in error and "no digit found" in error


def test_the_command_line_check_quotes_a_missing_name_with_a_newline(tmp_path, capsys):
    missing = tmp_path / "x\ny.png"
    with pytest.raises(SystemExit):
        check_command_line("predict", "torch", [str(missing)])
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("predict") or "error:" in line]
    assert repr(str(missing)) in line and "does not exist" in line


def write_through_fifo(fifo, data: bytes) -> threading.Thread:
    """A writer on the other end of `fifo`, as a shell's ``<(cat x.png)`` or a pipe into /dev/stdin is."""

    def write():
        with open(fifo, "wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_pipe_named_as_a_picture_is_read_as_input(framework, tmp_path, capsys):
    fifo = tmp_path / "63"  # what bash's <(cat x.png) names: /dev/fd/63
    os.mkfifo(fifo)
    check_command_line("predict", framework, [str(fifo)])  # admitted up front, without opening it
    writer = write_through_fifo(fifo, digit_picture(tmp_path / "x.png").read_bytes())
    predict_main(framework)([str(fifo), "--weights", str(random_weights(tmp_path / "w.safetensors")), "--json"])
    writer.join(timeout=10)
    [answer] = json.loads(capsys.readouterr().out)
    assert answer["image"] == str(fifo) and answer["digit"] in range(10)
