"""--stop-at-accuracy, --test-size and --nondeterministic, in both trainers: real MNIST, real training, in-process.

A run with a low target, evaluated on part of the test set (and saying so), stops after the first epoch that
reaches it, writes everything a full run writes and records the epoch in metrics.json; resumed with the same
target it trains nothing more, without it it goes on to --epochs. --nondeterministic changes nothing on the CPU
(the same bytes of weights), and the trainers put the frameworks' settings back as they found them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import jax
import pytest
import torch

from mnist_common.config import TrainConfig, stopped_at
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import runtime as jax_runtime
from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax import weights as jax_weights
from mnist_torch import checkpoint as torch_checkpoint
from mnist_torch import runtime as torch_runtime
from mnist_torch import steps as torch_steps
from mnist_torch import train as torch_train
from mnist_torch import weights as torch_weights

FRAMEWORKS = ["torch", "jax"]
TRAINERS = {"torch": torch_train, "jax": jax_train}
CHECKPOINT = {"torch": torch_checkpoint.CHECKPOINT_FILE, "jax": jax_checkpoint.CHECKPOINT_FILE}
OUTPUTS = ("metrics.json", WEIGHTS_FILE, "curves.png", "confusion.png", "misclassified.png")

#: 10 SGD steps per epoch at a learning rate low enough that test accuracy climbs over the epochs, evaluated on the
#: first 2 000 test images (--test-size); measured on the CPU: PyTorch 36.7%, 55.6%, 72.3%, JAX 42.8%, 57.2%, 71.3%,
#: so a target of 50% stops after epoch 2 of 3.
SMALL = {"train_size": 1280, "test_size": 2000, "lr": 0.02, "device": "cpu", "quiet": True}
TARGET = 0.5
EVALUATE = {"torch": torch_steps.evaluate, "jax": jax_steps.evaluate}
LOAD_WEIGHTS = {"torch": torch_weights.load_weights, "jax": jax_weights.load_weights}
DEVICE = {"torch": torch.device("cpu"), "jax": jax.devices("cpu")[0]}


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


@pytest.mark.e2e  # longer real runs: two runs of two epochs, and two resumes, in each framework
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_reached_target_stops_the_run_writes_everything_and_resume_honours_it(
    framework, tmp_path, capsys, mnist, jax_mnist
):
    """The target run; then the same run with --nondeterministic, which on the CPU changes no byte of the weights and
    puts the frameworks' settings back as it found them; then the target run resumed with the same target (nothing
    more to train) and without it (every epoch)."""
    trainer = TRAINERS[framework]
    config = TrainConfig(epochs=3, stop_at_accuracy=TARGET, out_dir=tmp_path / "default", **SMALL)
    records = trainer.train(config)

    out_dir = config.out_dir
    run = metrics(out_dir)
    accuracies = [e["test_accuracy"] for e in run["epochs"]]
    assert 1 <= len(accuracies) < config.epochs, accuracies
    assert run["stopped_at_accuracy"] == len(accuracies) == records[-1].epoch
    assert accuracies[-1] >= TARGET and all(a < TARGET for a in accuracies[:-1]), accuracies
    assert run["test_accuracy"] == accuracies[-1] and run["diverged"] is None
    assert run["config"]["stop_at_accuracy"] == TARGET and run["config"]["epochs"] == 3
    assert run["config"]["nondeterministic"] is False
    assert (out_dir / CHECKPOINT[framework]).exists()
    assert all((out_dir / name).stat().st_size > 0 for name in OUTPUTS)
    final = capsys.readouterr().out.splitlines()
    assert len(final) == 1 and final[0].startswith(
        f"test accuracy {100 * accuracies[-1]:.2f}% (on the first 2000 of 10000 test images) on cpu"
    )
    # --test-size: every epoch's figures are those of the first 2 000 test images, recorded as such
    assert run["config"]["test_size"] == 2000
    test = (mnist if framework == "torch" else jax_mnist).test
    first = type(test)(test.images[:2000], test.labels[:2000])
    model = LOAD_WEIGHTS[framework](out_dir / WEIGHTS_FILE, DEVICE[framework])
    loss, accuracy = EVALUATE[framework](model, first)
    assert accuracy == accuracies[-1] and loss == pytest.approx(run["epochs"][-1]["test_loss"], rel=1e-6)
    assert f", stopped after epoch {len(accuracies)} of 3 at >= 50.00%; wrote " in final[0]
    weights = (out_dir / WEIGHTS_FILE).read_bytes()

    # --nondeterministic: the same bytes on the CPU. PyTorch's settings other than the defaults before the run, to
    # see that the run puts them back.
    fast = dataclasses.replace(config, out_dir=tmp_path / "nondeterministic", nondeterministic=True)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    xla_flags = os.environ.get("XLA_FLAGS")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        fast_records = trainer.train(fast)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]
    assert os.environ.get("XLA_FLAGS") == xla_flags
    assert (fast.out_dir / WEIGHTS_FILE).read_bytes() == weights
    untimed = [[dataclasses.replace(r, seconds=0.0, images_per_s=0.0) for r in rs] for rs in (records, fast_records)]
    assert untimed[0] == untimed[1]
    nondeterministic = metrics(fast.out_dir)
    assert learning(nondeterministic) == learning(run) and nondeterministic["config"]["nondeterministic"] is True
    capsys.readouterr()

    # Resumed with the same target, which its last epoch reached: nothing more is trained, everything is written again.
    (out_dir / "metrics.json").unlink()
    resumed_records = trainer.train(dataclasses.replace(config, resume=True))
    resumed = metrics(out_dir)
    assert resumed_records == records and learning(resumed) == learning(run)
    assert resumed["stopped_at_accuracy"] == len(accuracies)
    assert (out_dir / WEIGHTS_FILE).read_bytes() == weights

    # Resumed without the target: it trains on to --epochs, and metrics.json says it ran every epoch.
    finished = trainer.train(dataclasses.replace(config, resume=True, stop_at_accuracy=None))
    assert [r.epoch for r in finished] == [1, 2, 3] and finished[: len(records)] == records
    assert metrics(out_dir)["stopped_at_accuracy"] is None and metrics(out_dir)["config"]["stop_at_accuracy"] is None
    assert len(metrics(out_dir)["epochs"]) == 3


@pytest.mark.parametrize("enabled", [True, False])
def test_torch_settings_during_the_run_and_restored_after(enabled):
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    with torch_runtime.deterministic(enabled):
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
    with jax_runtime.deterministic(enabled):
        expected = "--xla_dump_to=/nowhere --xla_gpu_deterministic_ops=true" if enabled else "--xla_dump_to=/nowhere"
        assert os.environ["XLA_FLAGS"] == expected
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere"
