"""A run that diverges stops at once with one line, keeps what was saved, and writes valid JSON; NaN
weights are refused on load; and on the same NaN weights both frameworks compute the same NaN."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from mnist_common.config import TrainConfig
from mnist_common.report import EpochRecord, format_evaluation, format_predictions
from mnist_common.weights import WEIGHTS_FILE, read_weights, write_weights
from mnist_jax import checkpoint as jax_checkpoint
from mnist_jax import evaluate as jax_evaluate
from mnist_jax import predict as jax_predict
from mnist_jax import steps as jax_steps
from mnist_jax import train as jax_train
from mnist_jax import tuned as jax_tuned
from mnist_jax.data import Split as JaxSplit
from mnist_jax.port import params_from_torch
from mnist_torch import evaluate as torch_evaluate
from mnist_torch import predict as torch_predict
from mnist_torch import steps as torch_steps
from mnist_torch import train as torch_train
from mnist_torch.data import Split as TorchSplit
from tests.checkpoint_files import read_torch_checkpoint, write_torch_checkpoint

FRAMEWORKS = ["torch", "jax"]
TRAINERS = {"torch": torch_train, "jax": jax_train}
EVALUATORS = {"torch": torch_evaluate, "jax": jax_evaluate}
PREDICTORS = {"torch": torch_predict, "jax": jax_predict}
SHORT = ["--epochs", "2", "--train-size", "1280", "--quiet"]
DIVERGED = (
    r"^error: training diverged in epoch 1 at step \d+ of 10 \(the loss became nan\); nothing of that epoch was saved, "
    r".*; lower --lr \(it was 10000\) and train again$"
)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which are not JSON."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def tree_digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_run_stops_in_one_line_and_records_it(framework, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main([*SHORT, "--lr", "1e4", "--out-dir", str(tmp_path)])
    message = str(exit_info.value.code)
    assert "\n" not in message
    assert re.match(DIVERGED, message), message
    metrics = strict_json((tmp_path / "metrics.json").read_text())
    assert metrics["epochs"] == [] and metrics["test_accuracy"] is None
    assert metrics["diverged"]["epoch"] == 1 and metrics["diverged"]["what"] == "the loss became nan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no NaN checkpoint, weights or plots


@pytest.mark.e2e  # a second real run of each trainer (in JAX, compiling its steps costs more than the run itself)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_diverging_run_leaves_the_last_good_files_untouched(framework, trained_run, tmp_path):
    """--overwrite replaces the earlier run only at the first checkpoint: a run diverging in its first epoch
    leaves every file of the good run byte for byte, its metrics.json included, and says so."""
    out_dir = tmp_path / "run"
    shutil.copytree(trained_run(framework), out_dir)
    before = tree_digest(out_dir)
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main([*SHORT, "--lr", "1e4", "--out-dir", str(out_dir), "--overwrite"])
    message = str(exit_info.value.code)
    assert re.match(DIVERGED, message) and "\n" not in message, message
    assert f"the files already in {out_dir} are left as they were, byte for byte" in message, message
    assert tree_digest(out_dir) == before  # metrics.json, checkpoint, weights and plots of the good run


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory, trained_run):
    """The torch run's weights with one NaN planted in conv2's kernel."""
    arrays = read_weights(trained_run("torch") / WEIGHTS_FILE)
    arrays["conv2.weight"][3, 1, 0, 2] = np.nan
    path = tmp_path_factory.mktemp("nan") / "nan.safetensors"
    write_weights(path, arrays)
    return path


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nan_weights_are_refused_by_evaluate(framework, nan_weights):
    with pytest.raises(SystemExit) as exit_info:
        EVALUATORS[framework].main(["--weights", str(nan_weights)])
    message = str(exit_info.value.code)
    assert message == (
        f"error: {nan_weights} holds NaN or infinite values in conv2.weight (1 of 18432): the weights of a "
        f"diverged run, which would predict nonsense; train again with a lower --lr, or pass another file"
    )


def test_nan_checkpoints_are_refused_by_predict_evaluate_and_resume(trained_run, tmp_path):
    torch_dir, jax_dir = tmp_path / "torch", tmp_path / "jax"
    shutil.copytree(trained_run("torch"), torch_dir)
    payload = read_torch_checkpoint(torch_dir / "checkpoint.pt")
    payload["model"]["fc1.bias"][7] = float("inf")
    write_torch_checkpoint(
        torch_dir / "checkpoint.pt", payload
    )  # with a matching checksum: only the NaN check can refuse it

    config = TrainConfig(epochs=2, train_size=6400, out_dir=jax_dir)
    state = jax_tuned.create_state(0, config)
    state = state.replace(
        params={**state.params, "fc2": {**state.params["fc2"], "bias": state.params["fc2"]["bias"].at[0].set(np.nan)}}
    )
    jax_checkpoint.save_checkpoint(jax_dir, state, [EpochRecord(1, 0.5, 0.4, 0.9, 1.0, 100.0)], config)

    digit = Path(__file__).resolve().parent.parent / "docs" / "seven.png"  # a real test digit
    for framework, folder, where in [
        ("torch", torch_dir, "fc1.bias (1 of 256)"),
        ("jax", jax_dir, "['fc2']['bias'] (1 of 10)"),
    ]:
        for command in (
            lambda: EVALUATORS[framework].main(["--checkpoint", str(folder)]),
            lambda: PREDICTORS[framework].main([str(digit), "--checkpoint", str(folder)]),
        ):
            with pytest.raises(SystemExit) as exit_info:
                command()
            message = str(exit_info.value.code)
            assert f"holds NaN or infinite values in {where}" in message and "\n" not in message, message
    resume = ["--epochs", "2", "--train-size", "6400", "--quiet", "--resume", "--out-dir"]
    with pytest.raises(SystemExit, match=r"holds NaN or infinite values in \.params\['fc2'\]\['bias'\] \(1 of 10\)"):
        jax_train.main([*resume, str(jax_dir)])
    with pytest.raises(SystemExit, match=r"holds NaN or infinite values in fc1\.bias \(1 of 256\)"):
        torch_train.main([*resume, str(torch_dir)])


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc1", "fc2"])
def test_both_frameworks_compute_the_same_nan(layer, trained_run, mnist, jax_mnist):
    """A NaN weight in any layer gives NaN in both frameworks' evaluation and prediction, never a finite
    answer in one of them (XLA:CPU's YNNPACK used to turn it into 93.63% accuracy: mnist_jax.model.relu)."""
    arrays = read_weights(trained_run("torch") / WEIGHTS_FILE)
    arrays[f"{layer}.weight"].flat[5] = np.nan
    state_dict = {k: torch.from_numpy(v) for k, v in arrays.items()}
    model = torch_train.CNN()
    model.load_state_dict(state_dict)
    params = params_from_torch(state_dict)["params"]
    n = 1000
    torch_loss, torch_accuracy = torch_steps.evaluate(model, TorchSplit(mnist.test.images[:n], mnist.test.labels[:n]))
    jax_loss, jax_accuracy = jax_steps.evaluate(
        params, JaxSplit(*jax.device_put((jax_mnist.test.images[:n], jax_mnist.test.labels[:n])))
    )
    assert math.isnan(torch_loss) and math.isnan(jax_loss)
    assert jax_accuracy == torch_accuracy
    torch_probabilities = torch_steps.predict(model, mnist.test.images[:n])
    jax_probabilities = jax_steps.predict(params, jax_mnist.test.images[:n])
    np.testing.assert_array_equal(np.isnan(jax_probabilities), np.isnan(torch_probabilities))
    assert np.isnan(torch_probabilities).any()


def test_json_outputs_never_hold_a_bare_nan():
    evaluation = format_evaluation("jax", "w.safetensors", "cpu", float("nan"), 980, 10_000, as_json=True)
    assert strict_json(evaluation)["test_loss"] is None
    predictions = format_predictions(["a.png"], np.full((1, 10), np.nan), as_json=True)
    assert all(entry["probability"] is None for entry in strict_json(predictions)[0]["top3"])


class WritesAFile:
    """A pickle payload that, if unpickled, would create a file: what a hostile checkpoint could do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain torch.save", "behind a valid checksum header"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(wrapped, tmp_path):
    """A checksum proves a file whole, not trustworthy (anyone can compute one): behind a valid header the
    pickle still meets ``weights_only=True``; without one it is refused before anything is unpickled."""
    target = tmp_path / "pwned"
    payload = {"epoch": 1, "model": WritesAFile(target)}
    if wrapped:
        write_torch_checkpoint(tmp_path / "checkpoint.pt", payload)
    else:
        torch.save(payload, tmp_path / "checkpoint.pt")
    expected = (
        "holds Python objects besides tensors, which could run code when loaded, so it is refused"
        if wrapped
        else "is not a checkpoint written by this project's trainers (a plain torch.save file"
    )
    for command in (
        lambda: torch_evaluate.main(["--checkpoint", str(tmp_path)]),
        lambda: torch_train.main(["--epochs", "2", "--quiet", "--resume", "--out-dir", str(tmp_path)]),
    ):
        with pytest.raises(SystemExit) as exit_info:
            command()
        message = str(exit_info.value.code)
        assert expected in message, message
        assert "weights_only=False" not in message and "\n" not in message
    assert not target.exists()
