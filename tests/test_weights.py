"""Weights move between the frameworks through safetensors and evaluate to the same test accuracy on either side."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch

from mnist_common.weights import EXPECTED_SHAPES, WEIGHTS_FILE, WeightsError, read_weights
from mnist_jax import evaluate as jax_evaluate
from mnist_jax import weights as jax_weights
from mnist_torch import evaluate as torch_evaluate
from mnist_torch import weights as torch_weights
from mnist_torch.model import CNN as TorchCNN

FRAMEWORKS = ["torch", "jax"]
EVALUATORS = {"torch": torch_evaluate, "jax": jax_evaluate}


def evaluate_json(framework: str, argv: list[str], capsys) -> dict:
    capsys.readouterr()  # drop anything printed before (e.g. by the training fixture)
    EVALUATORS[framework].main([*argv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("trained_by", FRAMEWORKS)
def test_exported_weights_reproduce_the_training_run_in_both_frameworks(trained_by, trained_run, capsys):
    """A run's weights.safetensors, evaluated by each framework, gives the run's own test accuracy to the image.

    Identical correct counts are expected, not just close: the models agree on the logits to ~1e-7 relative
    (tests/test_parity.py), far below the margin of any test image's prediction for these models.
    """
    out_dir = trained_run(trained_by)
    trained_accuracy = json.loads((out_dir / "metrics.json").read_text())["test_accuracy"]
    results = {fw: evaluate_json(fw, ["--weights", str(out_dir / WEIGHTS_FILE)], capsys) for fw in FRAMEWORKS}
    for framework, result in results.items():
        assert result["framework"] == framework and result["total"] == 10_000
        assert result["correct"] == round(trained_accuracy * 10_000), framework
        assert result["test_accuracy"] == trained_accuracy > 0.85, framework
    assert results["torch"]["test_loss"] == pytest.approx(results["jax"]["test_loss"], rel=1e-5)
    # and the run's own checkpoint, in its own framework, agrees with its exported weights
    own = evaluate_json(trained_by, ["--checkpoint", str(out_dir)], capsys)
    assert own["correct"] == results[trained_by]["correct"]


def test_a_file_holds_torch_layout_and_round_trips_bit_exactly(tmp_path):
    torch.manual_seed(3)
    model = TorchCNN()
    torch_weights.export_weights(model, tmp_path / "a.safetensors")
    assert {k: v.shape for k, v in read_weights(tmp_path / "a.safetensors").items()} == EXPECTED_SHAPES
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == EXPECTED_SHAPES  # the table is the model's
    assert EXPECTED_SHAPES["conv1.weight"] == (32, 1, 3, 3)  # OIHW, PyTorch's layout

    params = jax_weights.load_weights(tmp_path / "a.safetensors", jax.devices("cpu")[0])
    assert params["conv1"]["kernel"].shape == (3, 3, 1, 32)  # HWIO inside JAX
    jax_weights.export_weights(params, tmp_path / "b.safetensors")
    back = torch_weights.load_weights(tmp_path / "b.safetensors", torch.device("cpu"))
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_weight_files_are_one_line_errors(framework, tmp_path):
    state_dict = {k: v.numpy() for k, v in TorchCNN().state_dict().items()}
    torch_weights.write_weights(tmp_path / "wrong.safetensors", {**state_dict, "fc2.weight": np.zeros((5, 256))})
    (tmp_path / "text.safetensors").write_text("not weights")
    cases = {
        "wrong.safetensors": (
            r"does not hold this CNN's weights in PyTorch state_dict layout: "
            r"fc2.weight \(5, 256\) \(expected \(10, 256\)\)"
        ),
        "text.safetensors": r"text.safetensors is not a safetensors file",
        "missing.safetensors": r"missing.safetensors does not exist",
    }
    for name, message in cases.items():
        with pytest.raises(SystemExit, match=rf"^error: .*{message}") as exit_info:
            EVALUATORS[framework].main(["--weights", str(tmp_path / name)])
        assert "\n" not in str(exit_info.value.code)
    with pytest.raises(WeightsError, match="fc2.weight"):
        read_weights(tmp_path / "wrong.safetensors")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_evaluate_without_a_checkpoint_says_how_to_get_one(framework, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        EVALUATORS[framework].main(["--checkpoint", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: no checkpoint in {tmp_path}")
    assert f"train one with `python -m mnist_{framework}.train`, or pass --checkpoint DIR" in message
