"""Overlay the curves of two (or more) runs from their metrics.json files, in one figure.

Usage: python -m mnist_torch.compare runs/torch/metrics.json runs/jax/metrics.json [--out compare.png]

Framework-neutral: it reads only metrics.json, whose schema both trainers share.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from mnist_torch.plots import plot_curves, save_figure


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(Path(path).read_text())
        metrics["epochs"][0]["test_accuracy"]  # the schema both trainers write
        return metrics
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        raise ValueError(
            f"{path} is not a trainer's metrics.json ({type(err).__name__}: {err}); "
            f"pass the metrics.json that `python -m mnist_torch.train` or `python -m mnist_jax.train` wrote"
        ) from None


def run_label(metrics: dict[str, Any], path: Path, taken: set[str]) -> str:
    """The framework's name, or framework (folder) when two runs share a framework."""
    label = metrics.get("framework", Path(path).parent.name)
    return label if label not in taken else f"{label} ({Path(path).parent})"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_torch.compare", description=__doc__.splitlines()[0])
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json files, e.g. runs/torch/metrics.json runs/jax/metrics.json")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    runs: dict[str, Any] = {}
    try:
        for path in args.metrics:
            metrics = read_metrics(path)
            runs[run_label(metrics, path, set(runs))] = metrics["epochs"]
    except ValueError as err:
        sys.exit(f"error: {err}")
    save_figure(plot_curves(runs), args.out)
    summary = ", ".join(f"{name} {100 * epochs[-1]['test_accuracy']:.2f}%" for name, epochs in runs.items())
    print(f"final test accuracy: {summary}; wrote {args.out}")


if __name__ == "__main__":
    main()
