"""Checkpoints: a run stopped after epoch 1 and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from mnist_common.checkpoint import CheckpointError, check_resumable
from mnist_common.config import TrainConfig
from mnist_common.report import EpochRecord
from mnist_common.weights import WEIGHTS_FILE, read_weights
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_torch import checkpoint as torch_checkpoint
from mnist_torch import train as torch_train
from tests.test_tensorboard import assert_events_are_the_runs_metrics
from tests.test_trainer_profiler import assert_the_trace_names_the_steps_convolutions

FRAMEWORKS = ["torch", "jax"]
TRAINERS = {"torch": torch_train, "jax": jax_train}
SHORT = ["--train-size", "6400", "--quiet"]
CHECKPOINT_NAME = {"torch": torch_checkpoint.CHECKPOINT_FILE, "jax": jax_checkpoint.CHECKPOINT_FILE}


def learning(metrics: dict) -> list[dict]:
    """The epoch records without the wall-clock fields, which differ from run to run."""
    return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in metrics["epochs"]]


@pytest.mark.e2e  # two epochs of training of its own in each framework: a longer real run
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_stop_after_epoch_one_then_resume_equals_an_uninterrupted_run(framework, trained_run, tmp_path):
    """One epoch, then --resume to two, ends on the uninterrupted run's very weights and records; with the
    instruments on (--tensorboard over both parts, --profile in the first), which therefore change nothing of the
    training, and write what they must: the events are the run's metrics.json, the trace names the convolutions."""
    uninterrupted = trained_run(framework)  # --epochs 2 in one go, same seed and data
    out_dir, events, trace = tmp_path / "run", tmp_path / "tensorboard", tmp_path / "profile"
    instruments = ["--out-dir", str(out_dir), "--tensorboard", str(events)]
    TRAINERS[framework].main(["--epochs", "1", *SHORT, *instruments, "--profile", str(trace)])
    assert (out_dir / CHECKPOINT_NAME[framework]).exists()  # a one-epoch run leaves its checkpoint and plots
    assert all(
        (out_dir / name).stat().st_size > 10_000 for name in ("curves.png", "confusion.png", "misclassified.png")
    )
    assert json.loads((out_dir / "metrics.json").read_text())["config"]["epochs"] == 1
    TRAINERS[framework].main(["--epochs", "2", *SHORT, *instruments, "--resume"])

    expected, resumed = read_weights(uninterrupted / WEIGHTS_FILE), read_weights(out_dir / WEIGHTS_FILE)
    assert resumed.keys() == expected.keys() and len(expected) == 8
    for name in expected:  # measured: bit-exact on CPU in both frameworks
        np.testing.assert_array_equal(resumed[name], expected[name], err_msg=name)
    expected_metrics = json.loads((uninterrupted / "metrics.json").read_text())
    resumed_metrics = json.loads((out_dir / "metrics.json").read_text())
    assert learning(resumed_metrics) == learning(expected_metrics)  # both epochs, the first one from the checkpoint
    assert resumed_metrics["test_accuracy"] == expected_metrics["test_accuracy"] > 0.85
    assert resumed_metrics["config"] == {
        **expected_metrics["config"],
        "resume": True,
        "out_dir": str(out_dir),
        "tensorboard": str(events),
    }
    assert_events_are_the_runs_metrics(events, resumed_metrics, framework, steps_per_epoch=6400 // 128)
    assert_the_trace_names_the_steps_convolutions(framework, trace)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_without_a_checkpoint_is_one_line_saying_what_to_do(framework, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main(["--epochs", "1", *SHORT, "--out-dir", str(tmp_path), "--resume"])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: no checkpoint in {tmp_path}") and "drop --resume to start afresh" in message
    assert "\n" not in message and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resume_refuses_other_hyperparameters_and_fewer_epochs(framework, trained_run, monkeypatch, mnist, jax_mnist):
    out_dir = str(trained_run(framework))
    # The trainer loads MNIST before it reads the checkpoint: here it gets this session's copy (conftest's `mnist`)
    # instead of loading it again for each of the three runs; what is tested is the refusal, which follows.
    session_data = {"torch": mnist, "jax": jax_mnist}[framework]
    monkeypatch.setattr(TRAINERS[framework], "load_mnist", lambda data_dir: session_data)
    before = (trained_run(framework) / "metrics.json").read_text()
    with pytest.raises(
        SystemExit,
        match=r"^error: the checkpoint in .* was trained with --lr 0.1, this run asks for --lr 0.05; "
        r"pass --lr 0.1 to resume it, or drop --resume",
    ):
        TRAINERS[framework].main(["--epochs", "3", *SHORT, "--lr", "0.05", "--out-dir", out_dir, "--resume"])
    with pytest.raises(
        SystemExit,
        match=r"was trained with --precision float32, this run asks for --precision bf16; "
        r"pass --precision float32 to resume it",
    ):  # metrics.json would mislabel its epochs
        TRAINERS[framework].main(["--epochs", "3", *SHORT, "--precision", "bf16", "--out-dir", out_dir, "--resume"])
    with pytest.raises(
        SystemExit,
        match=r"was trained with --test-size 10000, this run asks for --test-size 1000; "
        r"pass --test-size 10000 to resume it",
    ):  # its accuracies would be on two test sets
        TRAINERS[framework].main(["--epochs", "3", *SHORT, "--test-size", "1000", "--out-dir", out_dir, "--resume"])
    with pytest.raises(
        SystemExit, match=r"has already trained 2 epochs, more than --epochs 1; pass --epochs 2 or more"
    ):
        TRAINERS[framework].main(["--epochs", "1", *SHORT, "--out-dir", out_dir, "--resume"])
    assert (trained_run(framework) / "metrics.json").read_text() == before  # nothing touched


def test_a_checkpoint_from_before_test_size_resumes_as_the_whole_test_set(tmp_path):
    """Checkpoints written before --test-size existed evaluated on every test image: one resumes under the default,
    and is refused under another --test-size."""
    saved = TrainConfig(epochs=2).to_json()
    del saved["test_size"]
    check_resumable(saved, 2, TrainConfig(epochs=3), tmp_path)
    with pytest.raises(CheckpointError, match=r"trained with --test-size 10000, this run asks for --test-size 500"):
        check_resumable(saved, 2, TrainConfig(epochs=3, test_size=500), tmp_path)


def test_jax_fresh_run_replaces_a_later_checkpoint_left_in_its_out_dir(tmp_path):
    """A new run into an old out-dir replaces the later checkpoint it finds there with its own first epoch."""
    config = TrainConfig(epochs=2, train_size=6400, out_dir=tmp_path)
    state = jax_tuned.create_state(0, config)
    records = [EpochRecord(e, 1.0 / e, 0.5, 0.9, 1.0, 100.0) for e in (1, 2)]
    jax_checkpoint.save_checkpoint(tmp_path, state, records, config)
    jax_checkpoint.save_checkpoint(tmp_path, state, records[:1], config)  # a new run's first epoch
    restored, restored_records = jax_checkpoint.load_checkpoint(tmp_path, jax_tuned.create_state(1, config), config)
    assert restored_records == records[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [jax_checkpoint.CHECKPOINT_FILE]
    same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state))]
    assert all(same) and len(same) > 8  # params and momentum traces, restored into a state made from another seed
