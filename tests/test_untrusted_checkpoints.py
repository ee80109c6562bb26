"""Checkpoints that are cut short, damaged, edited, foreign or plain: one line each, from every command that reads one.

Every byte of a checkpoint is covered by the SHA-256 in its header (`mnist_common.files.checked_bytes`),
so a flipped byte anywhere is refused, never resumed; a file of the other framework, or a plain
``torch.save`` / flax msgpack file, is named as such. `--resume` refuses before touching the out-dir;
`evaluate` and `predict` refuse before computing anything.
"""

from __future__ import annotations

import errno
import io
import shutil
from pathlib import Path

import flax.serialization
import pytest
import torch

from mnist_jax import evaluate as jax_evaluate
from mnist_jax import predict as jax_predict
from mnist_jax import train as jax_train
from mnist_jax.checkpoint import CHECKPOINT_FILE as JAX_CHECKPOINT
from mnist_torch import evaluate as torch_evaluate
from mnist_torch import predict as torch_predict
from mnist_torch import train as torch_train
from mnist_torch.checkpoint import CHECKPOINT_FILE as TORCH_CHECKPOINT
from mnist_torch.model import CNN
from tests.checkpoint_files import read_torch_checkpoint

TRAINERS = {"torch": torch_train, "jax": jax_train}
EVALUATORS = {"torch": torch_evaluate, "jax": jax_evaluate}
PREDICTORS = {"torch": torch_predict, "jax": jax_predict}
CHECKPOINT = {"torch": TORCH_CHECKPOINT, "jax": JAX_CHECKPOINT}
OTHER = {"torch": "jax", "jax": "torch"}
DIGIT = Path(__file__).resolve().parent.parent / "docs" / "seven.png"


def plain_file(framework: str, run: Path) -> bytes:
    """What a user might hand over instead: PyTorch's plain state_dict, or flax's msgpack of the params."""
    if framework == "torch":
        buffer = io.BytesIO()
        torch.save(CNN().state_dict(), buffer)
        return buffer.getvalue()
    return flax.serialization.msgpack_serialize({"params": {"fc2": {"bias": [0.0] * 10}}})


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def edited_epoch(framework: str, data: bytes) -> bytes:
    """The saved epoch number changed by hand (same length), the header left as it was."""
    old, new = (b"epoch", b"epocH") if framework == "torch" else (b'"epoch": 2', b'"epoch": 9')
    assert data.count(old) >= 1
    return data.replace(old, new, 1)


def cases(framework: str, run: Path, other_run: Path) -> dict[str, tuple[bytes, str]]:
    """name: (the file's bytes, what the one line must say)."""
    data = (run / CHECKPOINT[framework]).read_bytes()
    header = data.index(b"\n")
    other = {"torch": "PyTorch", "jax": "JAX"}[OTHER[framework]]
    mismatch = "does not match the SHA-256 written with it: it was damaged or edited after it was written"
    return {
        "empty": (b"", "(it is empty; expected a file starting with MNIST-CHECKPOINT)"),
        "cut in half": (data[: len(data) // 2], "is cut short"),
        "last byte missing": (data[:-1], "is cut short"),
        "a byte appended": (data + b"\0", "is longer than written"),
        "flipped in the magic": (flipped(data, 0), "is not a checkpoint written by this project's trainers"),
        "flipped in the length": (
            flipped(data, header - 66),
            "does not match the SHA-256|is cut short|longer than written",
        ),
        "flipped in the checksum": (flipped(data, header - 1), mismatch),
        "flipped after the header": (flipped(data, header + 1), mismatch),
        "flipped in the middle": (flipped(data, len(data) // 2), mismatch),
        "flipped in the last byte": (flipped(data, len(data) - 1), mismatch),
        "metadata edited by hand": (edited_epoch(framework, data), mismatch),
        "the other framework's": ((other_run / CHECKPOINT[OTHER[framework]]).read_bytes(), f"is a {other} checkpoint"),
        "a plain file of the framework": (
            plain_file(framework, run),
            "is not a checkpoint written by this project's trainers",
        ),
    }


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_every_damaged_or_foreign_checkpoint_is_refused_in_one_line(
    framework, trained_run, tmp_path, monkeypatch, mnist, jax_mnist
):
    run = trained_run(framework)
    # The trainer loads MNIST before it reads the checkpoint: here it gets this session's copy (conftest's `mnist`)
    # instead of loading it again for each of the 13 files; what is tested is the checkpoint's refusal, which follows.
    session_data = {"torch": mnist, "jax": jax_mnist}[framework]
    monkeypatch.setattr(TRAINERS[framework], "load_mnist", lambda data_dir: session_data)
    tried = 0
    for name, (data, expected) in cases(framework, run, trained_run(OTHER[framework])).items():
        out_dir = tmp_path / name.replace(" ", "-").replace("'", "")
        shutil.copytree(run, out_dir)
        (out_dir / CHECKPOINT[framework]).write_bytes(data)
        before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
        for command in (
            lambda: TRAINERS[framework].main(
                ["--epochs", "3", "--train-size", "6400", "--quiet", "--resume", "--out-dir", str(out_dir)]
            ),
            lambda: EVALUATORS[framework].main(["--checkpoint", str(out_dir)]),
            lambda: PREDICTORS[framework].main([str(DIGIT), "--checkpoint", str(out_dir)]),
        ):
            with pytest.raises(SystemExit) as exit_info:
                command()
            message = str(exit_info.value.code)
            assert message.startswith(f"error: {out_dir / CHECKPOINT[framework]} "), (name, message)
            assert "\n" not in message and "Traceback" not in message, (name, message)
            assert any(part in message for part in expected.split("|")), (name, message)
            # the way out that works: a run into the folder without a flag is refused, as it holds a run
            assert message.endswith("train afresh with --overwrite, which replaces it, or into another --out-dir")
            tried += 1
        assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before, name  # --resume touched nothing
    assert tried == 13 * 3


@pytest.mark.parametrize("command", ["evaluate", "predict"])
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_the_other_frameworks_run_is_named_with_the_command_that_reads_it(framework, command, trained_run):
    """`--checkpoint` given the other framework's run: not "no checkpoint, train one", but whose checkpoint it
    is, the other framework's command that reads it and the --weights that reads its exported weights here."""
    other, run = OTHER[framework], trained_run(OTHER[framework])
    name = {"torch": "PyTorch", "jax": "JAX"}
    module = {"evaluate": EVALUATORS, "predict": PREDICTORS}[command][framework]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--checkpoint", str(run), *([str(DIGIT)] if command == "predict" else [])])
    assert exit_info.value.code == (
        f"error: {run} holds a {name[other]} checkpoint ({CHECKPOINT[other]}), not the {name[framework]} "
        f"{CHECKPOINT[framework]} that mnist_{framework}.{command} reads; use `python -m mnist_{other}.{command} "
        f"--checkpoint {run}`, or here --weights {run / 'weights.safetensors'}"
    )


def test_a_checkpoint_read_back_is_the_one_written(trained_run):
    """The header is not decoration: what a reader gets is exactly what the trainer saved."""
    payload = read_torch_checkpoint(trained_run("torch") / TORCH_CHECKPOINT)
    assert payload["epoch"] == 2 and payload["config"]["train_size"] == 6400
    assert set(payload["model"]) == set(CNN().state_dict())


@pytest.mark.e2e  # trains a whole epoch (the third) before the write that fails
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_full_disk_while_saving_loses_nothing(framework, trained_run, tmp_path, monkeypatch):
    """ENOSPC while the checkpoint of epoch 3 is written: one line, and every file of epoch 2 as it was."""
    out_dir = tmp_path / "run"
    shutil.copytree(trained_run(framework), out_dir)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    write_bytes = Path.write_bytes

    def full_disk(path: Path, data: bytes) -> int:
        if path.name.endswith(".partial"):
            write_bytes(path, data[: len(data) // 3])  # some of it reached the disk, as with a real ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return write_bytes(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main(
            ["--epochs", "3", "--train-size", "6400", "--quiet", "--resume", "--out-dir", str(out_dir)]
        )
    message = str(exit_info.value.code)
    assert message.startswith(
        f"error: cannot write {out_dir / CHECKPOINT[framework]}.partial: No space left on device; "
        f"files already in {out_dir} are as they were"
    ), message
    assert "\n" not in message
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before  # no partial file, no lock, nothing changed
