"""Test loss and accuracy of trained weights: a checkpoint of this framework, or safetensors from either.

Usage: python -m mnist_jax.evaluate [--weights FILE.safetensors | --checkpoint DIR] [--json]

Read it side by side with `mnist_torch/evaluate.py`. A ``weights.safetensors`` written by
`python -m mnist_torch.train` evaluates here to the PyTorch run's own test accuracy: the file
is converted from PyTorch's layout by `mnist_jax.port`, and the two models compute the same
function (see tests/test_weights.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

if __name__ == "__main__":
    # Check the command line before the imports below load JAX and PyTorch (seconds, 1 GB): a bad flag or a
    # path that cannot work then fails at once, with argparse's usage and one error line (exit status 2).
    from mnist_common import interrupts
    from mnist_common.cli import check_command_line

    interrupts.install("python -m mnist_jax.evaluate")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("evaluate", "jax", sys.argv[1:])  # parsed once: main runs what was checked

import jax

from mnist_common.cli import parse_model_args
from mnist_common.config import default_out_dir
from mnist_common.errors import ProjectError
from mnist_common.report import format_evaluation
from mnist_jax.checkpoint import checkpoint_path, load_params
from mnist_jax.data import Split, load_mnist
from mnist_jax.runtime import resolve_device
from mnist_jax.steps import evaluate
from mnist_jax.weights import load_weights


def main(argv: Sequence[str] | None = None, checked: argparse.Namespace | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    args = checked or parse_model_args("evaluate", "jax", argv)
    try:
        device = resolve_device(args.device)
        if args.weights is not None:
            source, params = args.weights, load_weights(args.weights, device)
        else:
            out_dir = args.checkpoint or default_out_dir("jax")
            source, params = checkpoint_path(out_dir), load_params(out_dir, device)
        test = load_mnist(args.data_dir).test
    except ProjectError as err:  # the project's own errors: their message is the whole line
        sys.exit(f"error: {err}")
    loss, accuracy = evaluate(params, Split(*jax.device_put(tuple(test), device)))
    total = len(test.labels)
    print(format_evaluation("jax", str(source), str(device), loss, round(accuracy * total), total, args.json))


if __name__ == "__main__":
    main(checked=CHECKED)
