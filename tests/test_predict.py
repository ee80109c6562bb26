"""Pictures of digits, any size and polarity, are brought to MNIST's form and named correctly by both frameworks."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from mnist_jax import predict as jax_predict
from mnist_jax import train as jax_train
from mnist_jax.checkpoint import load_params
from mnist_torch import predict as torch_predict
from mnist_torch import train as torch_train
from mnist_torch.checkpoint import load_model
from mnist_torch.data import MNIST_MEAN, MNIST_STD
from mnist_torch.images import ImageError, load_digit

FRAMEWORKS = ["torch", "jax"]
PREDICTORS = {"torch": torch_predict, "jax": jax_predict}


def pixels_of(mnist, i: int) -> np.ndarray:
    """Test image ``i`` as the original uint8 pixels, light digit on a dark background."""
    return np.round((mnist.test.images[i, 0].numpy() * MNIST_STD + MNIST_MEAN) * 255).astype(np.uint8)


def write_variants(pixels: np.ndarray, folder, stem: str) -> list:
    """The digit upscaled 10x to 280x280 as a PNG, inverted (dark on white) as a PNG, and as a JPEG."""
    big = Image.fromarray(pixels).resize((280, 280), Image.Resampling.BICUBIC)
    paths = [folder / f"{stem}.png", folder / f"{stem}_inverted.png", folder / f"{stem}.jpg"]
    big.save(paths[0])
    Image.fromarray(255 - np.asarray(big)).save(paths[1])
    big.convert("RGB").save(paths[2], quality=90)
    return paths


def test_an_upscaled_test_digit_comes_back_as_itself_in_either_polarity_and_format(mnist, tmp_path):
    original = mnist.test.images[0, 0].numpy()  # a 7
    for path in write_variants(pixels_of(mnist, 0), tmp_path, "seven"):
        digit = load_digit(path)
        assert digit.shape == (28, 28) and digit.dtype == np.float32
        assert np.corrcoef(digit.ravel(), original.ravel())[0, 1] > 0.97, path.name  # measured 0.99
        assert digit.min() == pytest.approx(original.min(), abs=1e-6)  # background: MNIST's normalized 0
        assert digit.max() == pytest.approx(original.max(), abs=0.05)


def test_a_wide_digit_is_fitted_to_a_20_pixel_box_and_centred_by_mass(tmp_path):
    canvas = np.full((300, 500), 255, np.uint8)  # dark bar on white paper, off-centre
    canvas[100:140, 50:450] = 0
    Image.fromarray(canvas).save(tmp_path / "bar.png")
    ink = load_digit(tmp_path / "bar.png") * MNIST_STD + MNIST_MEAN > 0.5
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert cols[-1] - cols[0] + 1 == 20 and rows[-1] - rows[0] + 1 == 2  # longer side 20 px, aspect kept
    assert abs(np.mean(np.nonzero(ink)[0]) - 14) <= 1 and abs(np.mean(np.nonzero(ink)[1]) - 14) <= 1


def test_unusable_pictures_are_refused_by_name(tmp_path):
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(tmp_path / "blank.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ImageError, match=r"blank.png shows no digit"):
        load_digit(tmp_path / "blank.png")
    with pytest.raises(ImageError, match=r"notes.png is not a readable image .*; pass a PNG or JPEG"):
        load_digit(tmp_path / "notes.png")
    with pytest.raises(ImageError, match=r"gone.png does not exist"):
        load_digit(tmp_path / "gone.png")


def model_probabilities(framework: str, out_dir, mnist, jax_mnist, count: int) -> np.ndarray:
    """The run's own model on the first ``count`` original 28x28 test images."""
    if framework == "torch":
        return torch_train.predict(load_model(out_dir, torch.device("cpu")), mnist.test.images[:count])
    return jax_train.predict(load_params(out_dir, jax.devices("cpu")[0]), jax_mnist.test.images[:count])


def confident_digits(probabilities: np.ndarray, labels: np.ndarray) -> list[int]:
    """One test image per class that the model gets right at 28x28 with >= 90% probability (the first such):
    at that margin a prediction should survive the picture's resampling round trip."""
    chosen: dict[int, int] = {}
    for i in np.flatnonzero((probabilities.argmax(axis=1) == labels) & (probabilities.max(axis=1) >= 0.9)):
        chosen.setdefault(int(labels[i]), int(i))
    return sorted(chosen.values())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_names_upscaled_real_digits(framework, trained_run, mnist, jax_mnist, tmp_path, capsys):
    """Real test digits, chosen as those the run's model names correctly and confidently at 28x28 (one per class),
    each as a 280x280 PNG, an inverted PNG (dark on white) and a JPEG: predict names every one as its true label,
    which is therefore also the model's prediction on the original 28x28 image."""
    checkpoint = str(trained_run(framework))
    labels_200 = mnist.test.labels[:200].numpy()
    chosen = confident_digits(model_probabilities(framework, checkpoint, mnist, jax_mnist, 200), labels_200)
    assert len(chosen) == 10  # measured: all ten classes in the first 200 test images, for both runs
    paths, labels = [], []
    for i in chosen:
        label = int(mnist.test.labels[i])
        paths += write_variants(pixels_of(mnist, i), tmp_path, f"test{i}_{label}")
        labels += [label] * 3
    capsys.readouterr()  # drop the training fixture's output
    PREDICTORS[framework].main([*map(str, paths), "--checkpoint", checkpoint, "--json"])
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == [str(p) for p in paths]
    assert [r["digit"] for r in results] == labels
    for r in results:
        assert [t["digit"] for t in r["top3"]][0] == r["digit"] and len(r["top3"]) == 3
        assert r["top3"][0]["probability"] >= r["top3"][1]["probability"] >= r["top3"][2]["probability"]

    PREDICTORS[framework].main([str(paths[0]), "--checkpoint", checkpoint])
    line = capsys.readouterr().out.strip()  # e.g. test0_7.png: 7  (7 99.1%, 9 0.5%, 2 0.2%)
    assert line.startswith(f"{paths[0]}: {labels[0]}  ({labels[0]} ") and line.endswith("%)") and line.count("%") == 3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_predict_errors_are_one_line(framework, mnist, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SystemExit, match=r"^error: .*notes.txt is not a readable image"):
        PREDICTORS[framework].main([str(tmp_path / "notes.txt"), "--checkpoint", str(tmp_path)])
    Image.fromarray(pixels_of(mnist, 0)).save(tmp_path / "seven.png")
    monkeypatch.chdir(tmp_path)  # no runs/ here: the default checkpoint is missing
    with pytest.raises(SystemExit) as exit_info:
        PREDICTORS[framework].main(["seven.png"])
    message = str(exit_info.value.code)
    assert message.startswith(f"error: no checkpoint in runs/{framework} ") and "\n" not in message
    assert f"train one with `python -m mnist_{framework}.train`, or pass --checkpoint DIR" in message
