"""--stop-at-accuracy and --nondeterministic, in both trainers: real MNIST, real training, in-process.

A run with a low target stops after the first epoch that reaches it, writes everything a full run writes and
records the epoch in metrics.json; resumed with the same target it trains nothing more, without it it goes on
to --epochs. --nondeterministic changes nothing on the CPU (the same bytes of weights), and the trainers put
the frameworks' settings back as they found them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from mnist_common.config import TrainConfig, stopped_at
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_torch import checkpoint as torch_checkpoint
from mnist_torch import steps as torch_steps
from mnist_torch import train as torch_train

FRAMEWORKS = ["torch", "jax"]
TRAINERS = {"torch": torch_train, "jax": jax_train}
CHECKPOINT = {"torch": torch_checkpoint.CHECKPOINT_FILE, "jax": jax_checkpoint.CHECKPOINT_FILE}
OUTPUTS = ("metrics.json", WEIGHTS_FILE, "curves.png", "confusion.png", "misclassified.png")

#: 10 SGD steps per epoch at a learning rate low enough that test accuracy climbs over the epochs; measured on
#: the CPU (PyTorch): 38.5%, 58.7%, 78.0%, so a target of 50% stops after epoch 2 of 3.
SMALL = {"train_size": 1280, "lr": 0.02, "device": "cpu", "quiet": True}
TARGET = 0.5


def metrics(out_dir: Path) -> dict:
    return json.loads((out_dir / "metrics.json").read_text())


def learning(run: dict) -> list[dict]:
    """The epoch records without the wall-clock fields, which differ from run to run."""
    return [{k: v for k, v in e.items() if k not in ("seconds", "images_per_s")} for e in run["epochs"]]


def test_stopped_at_is_the_epoch_that_reached_the_target_before_the_last():
    config = TrainConfig(epochs=3, stop_at_accuracy=0.5)
    assert [stopped_at(config, accuracies) for accuracies in ([], [0.4], [0.5], [0.4, 0.7], [0.4, 0.45, 0.9])] == [
        None,
        None,
        1,
        2,
        None,
    ]  # the last: every epoch ran, nothing was cut short
    assert stopped_at(TrainConfig(epochs=3), [0.99]) is None  # no target
    assert stopped_at(TrainConfig(epochs=3, stop_at_accuracy=1.0), [0.9999]) is None


@pytest.mark.e2e  # longer real runs: three epochs and two resumes in each framework
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_reached_target_stops_the_run_writes_everything_and_resume_honours_it(framework, tmp_path, capsys):
    trainer = TRAINERS[framework]
    config = TrainConfig(epochs=3, stop_at_accuracy=TARGET, out_dir=tmp_path, **SMALL)
    records = trainer.train(config)

    run = metrics(tmp_path)
    accuracies = [e["test_accuracy"] for e in run["epochs"]]
    assert 1 <= len(accuracies) < config.epochs, accuracies
    assert run["stopped_at_accuracy"] == len(accuracies) == records[-1].epoch
    assert accuracies[-1] >= TARGET and all(a < TARGET for a in accuracies[:-1]), accuracies
    assert run["test_accuracy"] == accuracies[-1] and run["diverged"] is None
    assert run["config"]["stop_at_accuracy"] == TARGET and run["config"]["epochs"] == 3
    assert (tmp_path / CHECKPOINT[framework]).exists()
    assert all((tmp_path / name).stat().st_size > 0 for name in OUTPUTS)
    final = capsys.readouterr().out.splitlines()
    assert len(final) == 1 and final[0].startswith(f"test accuracy {100 * accuracies[-1]:.2f}% on cpu")
    assert f", stopped after epoch {len(accuracies)} of 3 at >= 50.00%; wrote " in final[0]

    # Resumed with the same target, which its last epoch reached: nothing more is trained, everything is written again.
    weights = (tmp_path / WEIGHTS_FILE).read_bytes()
    (tmp_path / "metrics.json").unlink()
    resumed_records = trainer.train(dataclasses.replace(config, resume=True))
    resumed = metrics(tmp_path)
    assert resumed_records == records and learning(resumed) == learning(run)
    assert resumed["stopped_at_accuracy"] == len(accuracies)
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == weights

    # Resumed without the target: it trains on to --epochs, and metrics.json says it ran every epoch.
    finished = trainer.train(dataclasses.replace(config, resume=True, stop_at_accuracy=None))
    assert [r.epoch for r in finished] == [1, 2, 3] and finished[: len(records)] == records
    assert metrics(tmp_path)["stopped_at_accuracy"] is None


@pytest.mark.e2e  # longer real runs: two runs of two epochs in each framework
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nondeterministic_changes_nothing_on_the_cpu_and_no_target_runs_every_epoch(framework, tmp_path):
    trainer = TRAINERS[framework]
    default, fast = tmp_path / "default", tmp_path / "nondeterministic"
    trainer.train(TrainConfig(epochs=2, out_dir=default, **SMALL))

    # PyTorch: settings other than the defaults before the run, to see that the run puts them back.
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    xla_flags = os.environ.get("XLA_FLAGS")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        trainer.train(TrainConfig(epochs=2, out_dir=fast, nondeterministic=True, **SMALL))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
    assert os.environ.get("XLA_FLAGS") == xla_flags

    assert (fast / WEIGHTS_FILE).read_bytes() == (default / WEIGHTS_FILE).read_bytes()
    plain, nondeterministic = metrics(default), metrics(fast)
    assert learning(nondeterministic) == learning(plain) and len(plain["epochs"]) == 2
    assert plain["stopped_at_accuracy"] is None and nondeterministic["stopped_at_accuracy"] is None
    assert plain["config"]["nondeterministic"] is False and nondeterministic["config"]["nondeterministic"] is True
    assert plain["config"]["stop_at_accuracy"] is None


@pytest.mark.parametrize("enabled", [True, False])
def test_torch_settings_during_the_run_and_restored_after(enabled):
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    with torch_steps.deterministic(enabled):
        assert torch.are_deterministic_algorithms_enabled() is enabled
        assert torch.backends.cudnn.benchmark is (not enabled)  # --nondeterministic: cuDNN autotuning
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    ) == before


@pytest.mark.parametrize("enabled", [True, False])
def test_jax_adds_deterministic_gpu_ops_only_when_enabled(enabled, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    with jax_steps.deterministic(enabled):
        expected = "--xla_dump_to=/nowhere --xla_gpu_deterministic_ops=true" if enabled else "--xla_dump_to=/nowhere"
        assert os.environ["XLA_FLAGS"] == expected
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere"
