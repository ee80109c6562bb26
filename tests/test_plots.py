"""What a run leaves to look at: its plots, the comparison figure, and the progress bar's rules."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
from PIL import Image

from mnist_common import compare
from mnist_common.plots import (
    CONFUSION_FILE,
    CURVES_FILE,
    GAP,
    MISCLASSIFIED_FILE,
    TILE,
    TITLE_ROOM,
    confusion_matrix,
    misclassified_montage,
    plot_misclassified,
)
from mnist_common.progress import EpochProgress, progress_enabled

FRAMEWORKS = ["torch", "jax"]


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG", path
        return image.size


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_run_leaves_its_plots_checkpoint_and_weights(framework, trained_run):
    out_dir = trained_run(framework)
    for name in (CURVES_FILE, CONFUSION_FILE, MISCLASSIFIED_FILE):
        width, height = png_size(out_dir / name)
        assert width > 300 and height > 100, name
    assert (out_dir / ("checkpoint.pt" if framework == "torch" else "checkpoint.msgpack")).exists()
    assert (out_dir / "weights.safetensors").stat().st_size > 3_000_000  # 824 458 float32 parameters
    assert not list(out_dir.glob("*.partial")) and not (out_dir / ".lock").exists()


def test_confusion_matrix_counts_true_against_predicted():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 2, 0])
    counts = confusion_matrix(labels, predictions)
    assert counts.shape == (10, 10) and counts.sum() == 6 and np.trace(counts) == 4
    assert counts[0, 1] == 1 and counts[2, 0] == 1 and counts[2, 2] == 2


def test_the_misclassified_digits_are_tiled_in_order_each_titled_true_to_predicted(mnist):
    """The montage holds each wrong digit, in order, 10 to a row, on white; one title per digit, none for the rest."""
    images, labels = mnist.test.images[:60].numpy(), mnist.test.labels[:60].numpy()
    predictions = labels.copy()
    wrong = np.array([0, 3, 4, 10, 11, 12, 20, 21, 30, 31, 32, 40, 59])
    predictions[wrong] = (labels[wrong] + 1) % 10
    pixels = images[wrong].reshape(-1, TILE, TILE)
    canvas = misclassified_montage(pixels, 10)
    assert canvas.shape == (2 * (TILE + TITLE_ROOM), 10 * (TILE + GAP))
    digits = np.zeros(canvas.shape, bool)
    for k, digit in enumerate(pixels):
        row, column = divmod(k, 10)
        top, left = row * (TILE + TITLE_ROOM) + TITLE_ROOM, column * (TILE + GAP) + GAP // 2
        np.testing.assert_array_equal(canvas[top : top + TILE, left : left + TILE], digit)
        digits[top : top + TILE, left : left + TILE] = True
    assert np.all(canvas[~digits] == 1.0)
    fig = plot_misclassified(images, labels, predictions, limit=12)
    (ax,) = fig.axes
    titles = [text.get_text() for text in ax.texts]
    assert titles == [f"{labels[i]} -> {predictions[i]}" for i in wrong[:12]]
    assert ax.get_title() == "misclassified test digits, true -> predicted (12 of 13 shown)"
    assert misclassified_montage(pixels[:0], 10).shape == (TILE + TITLE_ROOM, 10 * (TILE + GAP))


def test_compare_overlays_both_frameworks_curves(trained_run, tmp_path, capsys):
    paths = [str(trained_run(fw) / "metrics.json") for fw in FRAMEWORKS]
    accuracies = [json.loads(open(p).read())["test_accuracy"] for p in paths]
    capsys.readouterr()
    compare.main([*paths, "--out", str(tmp_path / "compare.png")])
    line = capsys.readouterr().out.strip()
    assert line == (
        f"final test accuracy: torch {100 * accuracies[0]:.2f}%, jax {100 * accuracies[1]:.2f}%; "
        f"wrote {tmp_path / 'compare.png'}"
    )
    assert png_size(tmp_path / "compare.png")[0] > 300


def test_compare_refuses_a_file_that_is_not_metrics(tmp_path):
    (tmp_path / "other.json").write_text('{"epochs": []}')
    with pytest.raises(
        SystemExit, match=r"^error: .*other.json is not a trainer's metrics.json .*; pass the metrics.json that"
    ):
        compare.main([str(tmp_path / "other.json"), "--out", str(tmp_path / "c.png")])
    assert not (tmp_path / "c.png").exists()


def test_progress_reads_the_loss_every_20_steps_and_at_the_end(monkeypatch):
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    reads = []
    with EpochProgress(steps=50, epoch=1, epochs=3, batch_size=128, enabled=True) as progress:
        for step in range(1, 51):
            progress.step(lambda step=step: reads.append(step) or 0.25)
        assert (
            progress.bar.n == 50
            and progress.bar.postfix.startswith("loss 0.2500  ")
            and progress.bar.postfix.endswith(" img/s")
        )
    assert reads == [20, 40, 50]  # not every step: each read waits for the device
    assert "epoch 1/3" in stderr.getvalue()  # on stderr, so stdout keeps only the epoch lines


def test_no_bar_when_quiet_or_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a log file: not a TTY
    assert not progress_enabled(quiet=False) and not progress_enabled(quiet=True)
    reads = []
    with EpochProgress(steps=40, epoch=1, epochs=1, batch_size=128, enabled=False) as progress:
        for _ in range(40):
            progress.step(lambda: reads.append(1) or 0.0)
    assert reads == [] and sys.stderr.getvalue() == ""
