"""Files checked by their header before their bytes, and pictures of any shape, each refused in one line.

Weights and checkpoints whose header declares more than the file holds, or more than this model needs, are
refused from the header, in one line, before any tensor is read; a checkpoint of another version names the field
it lacks or adds; one written with 64-bit JAX names its dtype. Every picture, of any size and aspect ratio, is
answered or refused in one line of its own; names with control characters stay on one line; a pipe is input.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import threading
import tracemalloc

import flax
import jax
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_common.checkpoint import MAX_CHECKPOINT_BYTES, CheckpointError, read_payload
from mnist_common.cli import check_command_line
from mnist_common.config import TrainConfig
from mnist_common.files import checked_bytes, read_checked
from mnist_common.images import load_digits
from mnist_common.outdir import CHECKPOINT_FILES, FRAMEWORKS
from mnist_common.report import EpochRecord
from mnist_common.weights import EXPECTED_SHAPES, WeightsError, read_weights, write_weights
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import tuned as jax_tuned
from mnist_torch import checkpoint as torch_checkpoint
from mnist_torch import tuned as torch_tuned
from tests.checkpoint_files import write_torch_checkpoint

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


# --- 1. weights checked by their header before their bytes -------------------------------------------------------

NAMES = sorted(EXPECTED_SHAPES)
DTYPES = ["F32", "F16", "BF16", "F64", "I32", "I64", "BOOL", "U8", "F8_E4M3", "??"]


def safetensors_file(path, header: object, length: int | None = None, size: int | None = None):
    """A file with `header` as its JSON header (`length` bytes declared for it), made `size` bytes long by a
    sparse tail (no disk, no writing): a small file can claim gigabytes."""
    encoded = json.dumps(header).encode()
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded) if length is None else length) + encoded)
        file.truncate(max(size or 0, 8 + len(encoded)))
    return path


def consistent_header(shapes: dict[str, list[int]], dtype: str = "F32") -> tuple[dict, int]:
    """A header whose data offsets tile its tensors, and the bytes of tensors it declares."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape, dtype=object)) * {"F32": 4, "F64": 8, "F16": 2, "BF16": 2}.get(dtype, 4)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    return header, offset


def peak_memory(call) -> tuple[BaseException | None, int]:
    """What `call` raised (None if nothing) and the most memory Python and NumPy allocated meanwhile."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as err:  # noqa: BLE001 - the caller looks at what it was
        raised = err
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return raised, peak


#: At most this much memory for reading any file: the CNN in float64 (6.6 MB) and room for the interpreter.
MEMORY_BOUND = 40 << 20

entries = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(DTYPES),
        "shape": st.lists(st.integers(0, 2**40), max_size=4),
        "data_offsets": st.lists(st.integers(0, 2**40), min_size=2, max_size=2),
    }
)
random_headers = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=12), entries, max_size=10)


@st.composite
def huge_headers(draw):
    """This CNN's names, one or more shapes grown huge, the offsets consistent and the file that long (sparse), or
    cut short, or longer: what a file of another model, or a forged one, declares."""
    shapes = {name: list(shape) for name, shape in EXPECTED_SHAPES.items()}
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)):
        shapes[name][0] *= draw(st.integers(1, 10**6))
    header, declared = consistent_header(shapes, draw(st.sampled_from(["F32", "F64", "BF16"])))
    return header, max(0, declared + draw(st.sampled_from([0, -1, 1, -(10**6), 2**32])))


@settings(PROPERTY, max_examples=25)
@given(case=st.one_of(random_headers.map(lambda h: (h, draw_size(h))), huge_headers()))
def test_any_safetensors_header_is_refused_in_one_line_within_the_models_memory(case, tmp_path_factory):
    header, data_bytes = case
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    encoded = len(json.dumps(header).encode())
    safetensors_file(path, header, size=8 + encoded + data_bytes)
    raised, peak = peak_memory(lambda: read_weights(path))
    assert peak < MEMORY_BOUND, peak
    if raised is not None:
        assert isinstance(raised, WeightsError), repr(raised)
        assert "\n" not in str(raised) and str(path) in str(raised)


def draw_size(header: dict) -> int:
    """The bytes of tensors a random header's file holds: what its last offset declares, to reach past checks."""
    ends = [e["data_offsets"][1] for e in header.values()]
    return min(max(ends, default=0), 2**40)


def test_a_sparse_file_declaring_huge_tensors_is_refused_from_its_header(tmp_path):
    shapes = {name: list(shape) for name, shape in EXPECTED_SHAPES.items()}
    shapes["fc1.weight"] = [256 * 1000, 3136]  # 3.2 GB of float32, on no disk
    header, declared = consistent_header(shapes)
    path = safetensors_file(tmp_path / "w.safetensors", header, size=8 + len(json.dumps(header)) + declared)
    raised, peak = peak_memory(lambda: read_weights(path))
    assert isinstance(raised, WeightsError) and peak < MEMORY_BOUND
    assert "fc1.weight (256000, 3136) (expected (256, 3136))" in str(raised)


def test_weights_cut_short_or_longer_than_declared_are_named_so(tmp_path):
    header, declared = consistent_header({name: list(shape) for name, shape in EXPECTED_SHAPES.items()})
    size = 8 + len(json.dumps(header))
    for tail, said in [(declared - 4, "is cut short"), (declared + 10**9, "is longer than its header declares")]:
        path = safetensors_file(tmp_path / f"{tail}.safetensors", header, size=size + tail)
        with pytest.raises(WeightsError, match=f"{said}: {tail} bytes of tensors after its header, {declared}"):
            read_weights(path)
    with pytest.raises(WeightsError, match="its header declares 4294967296 bytes, more than the"):
        read_weights(safetensors_file(tmp_path / "long.safetensors", header, length=2**32, size=size + declared))


# --- 1. checkpoints checked by their header before their bytes ---------------------------------------------------

CONFIG = TrainConfig(epochs=2, train_size=640, device="cpu")
RECORDS = [EpochRecord(1, 0.5, 0.4, 0.9, 1.0, 640.0)]


_SAVED: dict[str, tuple] = {}


def saved_run(framework: str, out_dir):
    """A fresh state's checkpoint, as a trainer writes it after epoch 1, and a fresh state to resume into (made
    once per framework: creating a state costs more than the checks tested)."""
    if framework not in _SAVED:
        made = _saved_run(framework, out_dir)
        _SAVED[framework] = (*made, made[0].checkpoint_path(out_dir).read_bytes())
    module, fresh, data = _SAVED[framework]
    module.checkpoint_path(out_dir).write_bytes(data)
    return module, fresh


def _saved_run(framework: str, out_dir):
    if framework == "torch":
        state = torch_tuned.create_state(0, CONFIG, torch.device("cpu"))
        torch_checkpoint.save_checkpoint(out_dir, state, RECORDS, CONFIG)
        return torch_checkpoint, torch_tuned.create_state(0, CONFIG, torch.device("cpu"))
    state = jax_tuned.create_state(0, CONFIG, jax.devices("cpu")[0])
    jax_checkpoint.save_checkpoint(out_dir, state, RECORDS, CONFIG)
    return jax_checkpoint, state


def reseal(framework: str, path, change) -> None:
    """The checkpoint at `path` opened, its parts changed by ``change(saved)``, sealed again with a valid header:
    what another version of this project, or a forger, writes."""
    payload = read_checked(path, framework, FRAMEWORKS)
    if framework == "torch":
        saved = torch.load(io.BytesIO(payload), weights_only=True)
        change(saved)
        write_torch_checkpoint(path, saved)
        return
    saved = flax.serialization.msgpack_restore(payload)
    meta = json.loads(saved["meta"])
    change(meta)
    change.state(saved["state"]) if hasattr(change, "state") else None
    saved["meta"] = json.dumps(meta)
    path.write_bytes(checked_bytes("jax", flax.serialization.msgpack_serialize(saved)))


FIELDS = [field.name for field in dataclasses.fields(TrainConfig)]


@pytest.mark.parametrize("framework", ["torch", "jax"])
@settings(PROPERTY, max_examples=12)
@given(
    where=st.sampled_from(["config", "record"]),
    dropped=st.lists(st.sampled_from(FIELDS), max_size=2, unique=True),
    added=st.lists(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10), max_size=2, unique=True),
)
def test_a_stored_configuration_of_another_version_names_the_field_it_lacks_or_adds(
    framework, where, dropped, added, tmp_path_factory
):
    out_dir = tmp_path_factory.mktemp("ckpt")
    module, fresh = saved_run(framework, out_dir)
    if where == "record":
        dropped = [f for f in dropped if f in ("epoch",)] or ["seconds"]
    added = [a for a in added if a not in FIELDS and a not in ("epoch", "seconds", "images_per_s")]
    if not dropped and not added:
        dropped = ["profile"]

    def change(saved):
        stored = saved["config"] if where == "config" else saved["records"][0]
        for name in dropped:
            stored.pop(name, None)
        for name in added:
            stored[name] = 1

    reseal(framework, module.checkpoint_path(out_dir), change)
    with pytest.raises(CheckpointError) as refused:
        module.load_checkpoint(out_dir, fresh, CONFIG)
    message = str(refused.value)
    assert "\n" not in message and "was written by another version of this project" in message
    assert all(repr(name) in message for name in [*dropped, *added]), message


def sixty_four_bits(state):
    """The arrays of a state as 64-bit JAX writes them: float64 and int64."""
    for key, value in list(state.items()):
        if isinstance(value, dict):
            sixty_four_bits(value)
        elif isinstance(value, np.ndarray) and value.dtype in (np.float32, np.int32):
            state[key] = value.astype(np.float64 if value.dtype == np.float32 else np.int64)


def test_a_checkpoint_written_with_64_bit_jax_is_named_so_not_called_unreadable(tmp_path):
    module, fresh = saved_run("jax", tmp_path)

    def change(meta):
        pass

    change.state = sixty_four_bits
    reseal("jax", module.checkpoint_path(tmp_path), change)
    for read in (
        lambda: module.load_checkpoint(tmp_path, fresh, CONFIG),
        lambda: module.load_params(tmp_path, jax.devices("cpu")[0]),
    ):
        with pytest.raises(CheckpointError, match=r"holds float64 .*arrays .*written with 64-bit JAX enabled") as err:
            read()
        assert "expected float32" in str(err.value) and "not a readable checkpoint" not in str(err.value)


def test_a_float64_pytorch_checkpoint_is_named_so(tmp_path):
    module, fresh = saved_run("torch", tmp_path)

    def change(saved):
        saved["model"] = {name: tensor.double() for name, tensor in saved["model"].items()}

    reseal("torch", module.checkpoint_path(tmp_path), change)
    with pytest.raises(CheckpointError, match=r"holds float64 arrays \(conv1.bias, .*\), .*; expected float32"):
        module.load_model(tmp_path, torch.device("cpu"))


@settings(PROPERTY, max_examples=25)
@given(
    declared=st.integers(0, 2**40) | st.sampled_from([MAX_CHECKPOINT_BYTES, MAX_CHECKPOINT_BYTES + 1]),
    size=st.integers(0, 2**36) | st.sampled_from([MAX_CHECKPOINT_BYTES + 300, 10 * MAX_CHECKPOINT_BYTES]),
    framework=st.sampled_from(["torch", "jax"]),
)
def test_a_checkpoint_of_any_declared_or_real_size_is_refused_in_one_line_within_the_models_memory(
    declared, size, framework, tmp_path_factory
):
    out_dir = tmp_path_factory.mktemp("big")
    path = out_dir / CHECKPOINT_FILES[framework]
    header = f"MNIST-CHECKPOINT 1 {framework} {declared} {'0' * 64}\n".encode()
    with open(path, "wb") as file:  # sparse: a small file that is any size
        file.write(header)
        file.truncate(max(size, len(header)))
    raised, peak = peak_memory(lambda: read_payload(out_dir, path, framework, "fix"))
    assert isinstance(raised, CheckpointError) and "\n" not in str(raised), repr(raised)
    assert peak < 2 * MAX_CHECKPOINT_BYTES, peak
    if size > MAX_CHECKPOINT_BYTES + 200:
        assert f"more than the {MAX_CHECKPOINT_BYTES:,} any checkpoint of this CNN takes" in str(raised)
        assert peak < MEMORY_BOUND
