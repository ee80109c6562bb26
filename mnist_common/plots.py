"""The pictures of a run, drawn from NumPy arrays and metrics.json records, shared by both trainers.

Framework-neutral, like `report.py`: both trainers pass their test-set predictions here, and
`mnist_common.compare` overlays two runs with the same `plot_curves`. Matplotlib's Agg
backend draws without a display, so plotting works over SSH and in CI.
Every file is written atomically, as `report.write_metrics` does.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # no display needed; must precede pyplot's import

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mnist_common.config import MNIST_MEAN, MNIST_STD, NUM_CLASSES  # noqa: E402
from mnist_common.files import write_atomically  # noqa: E402
from mnist_common.outdir import PLOT_FILES  # noqa: E402

CURVES_FILE, CONFUSION_FILE, MISCLASSIFIED_FILE = PLOT_FILES

Epochs = list[Mapping[str, Any]]  # metrics.json's "epochs": one dict per epoch


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Render to memory, then replace the file in one step: a failed save never leaves a broken PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return write_atomically(path, lambda partial: partial.write_bytes(buffer.getvalue()))


def plot_curves(runs: Mapping[str, Epochs]) -> plt.Figure:
    """Train and test loss (left) and test accuracy (right) per epoch, one colour per run.

    One run for a trainer's own ``curves.png``; several, labelled, for `mnist_common.compare`.
    """
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, epochs) in enumerate(runs.items()):
        colour = f"C{i}"
        x = [e["epoch"] for e in epochs]
        loss_ax.plot(x, [e["train_loss"] for e in epochs], "--", color=colour, marker=".", label=f"{name} train")
        loss_ax.plot(x, [e["test_loss"] for e in epochs], "-", color=colour, marker="o", label=f"{name} test")
        acc_ax.plot(x, [100 * e["test_accuracy"] for e in epochs], "-", color=colour, marker="o", label=name)
    loss_ax.set(title="cross-entropy loss", xlabel="epoch", ylabel="loss (log scale)", yscale="log")
    for axis in (loss_ax.yaxis.set_major_formatter, loss_ax.yaxis.set_minor_formatter):
        axis(matplotlib.ticker.FormatStrFormatter("%g"))  # 0.3, not 3 x 10^-1
    acc_ax.set(title="test accuracy", xlabel="epoch", ylabel="%")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """counts[true, predicted] over the split."""
    return np.bincount(labels * NUM_CLASSES + predictions, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def plot_confusion(labels: np.ndarray, predictions: np.ndarray) -> plt.Figure:
    """The 10x10 confusion matrix, counts written in the cells; a log colour scale keeps the rare errors visible."""
    counts = confusion_matrix(np.asarray(labels), np.asarray(predictions))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    image = ax.imshow(counts + 1, cmap="Blues", norm=matplotlib.colors.LogNorm())
    for t in range(NUM_CLASSES):
        for p in range(NUM_CLASSES):
            if counts[t, p]:
                ax.text(
                    p, t, str(counts[t, p]), ha="center", va="center", fontsize=8, color="white" if t == p else "black"
                )
    accuracy = np.trace(counts) / counts.sum()
    ax.set(
        xticks=range(NUM_CLASSES),
        yticks=range(NUM_CLASSES),
        xlabel="predicted",
        ylabel="true",
        title=f"confusion matrix: {counts.sum() - np.trace(counts)} errors, {100 * accuracy:.2f}% right",
    )
    fig.colorbar(image, ax=ax, label="count + 1")
    return fig


#: The misclassified digits' montage: pixels of a digit, of white between two digits, of room above one for its title.
TILE, GAP, TITLE_ROOM = 28, 4, 10


def tile_corner(k: int, columns: int) -> tuple[int, int]:
    """The montage row and column of the top-left pixel of digit `k`; its title sits in the room just above."""
    row, column = divmod(k, columns)
    return row * (TILE + TITLE_ROOM) + TITLE_ROOM, column * (TILE + GAP) + GAP // 2


def misclassified_montage(pixels: np.ndarray, columns: int) -> np.ndarray:
    """Digits (n, 28, 28) in [0, 1] tiled in rows of `columns` on white, with room above each for its title: one
    image in one Axes, which draws in a small fraction of the time a grid of one Axes per digit takes."""
    rows = max(1, -(-len(pixels) // columns))
    canvas = np.ones((rows * (TILE + TITLE_ROOM), columns * (TILE + GAP)), np.float32)
    for k, digit in enumerate(pixels):
        top, left = tile_corner(k, columns)
        canvas[top : top + TILE, left : left + TILE] = digit
    return canvas


def plot_misclassified(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray, limit: int = 40) -> plt.Figure:
    """The first ``limit`` misclassified digits (normalized, any layout with 784 pixels each), titled true ->
    predicted."""
    images, labels, predictions = np.asarray(images), np.asarray(labels), np.asarray(predictions)
    wrong = np.flatnonzero(labels != predictions)[:limit]
    columns = 10
    pixels = images[wrong].reshape(-1, TILE, TILE) * MNIST_STD + MNIST_MEAN  # back to [0, 1]
    canvas = misclassified_montage(pixels, columns)
    rows = canvas.shape[0] // (TILE + TITLE_ROOM)
    fig, ax = plt.subplots(figsize=(columns * 1.1, rows * 1.3))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for k, i in enumerate(wrong):
        top, left = tile_corner(k, columns)  # the title centred over the digit, just above its first row
        x, y = left + (TILE - 1) / 2, top - 1.5
        ax.text(x, y, f"{labels[i]} -> {predictions[i]}", ha="center", va="bottom", fontsize=9, color="firebrick")
    total = int((labels != predictions).sum())
    ax.set_title(f"misclassified test digits, true -> predicted ({len(wrong)} of {total} shown)", fontsize=10, pad=12)
    return fig


def write_plots(
    out_dir: Path, name: str, epochs: Epochs, images: np.ndarray, labels: np.ndarray, predictions: np.ndarray
) -> list[Path]:
    """A trainer's three pictures in its out-dir: curves, confusion matrix, misclassified digits."""
    out_dir = Path(out_dir)
    return [
        save_figure(plot_curves({name: epochs}), out_dir / CURVES_FILE),
        save_figure(plot_confusion(labels, predictions), out_dir / CONFUSION_FILE),
        save_figure(plot_misclassified(images, labels, predictions), out_dir / MISCLASSIFIED_FILE),
    ]
