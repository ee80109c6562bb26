"""Test loss and accuracy of trained weights: a checkpoint of this framework, or safetensors from either.

Usage: python -m mnist_torch.evaluate [--weights FILE.safetensors | --checkpoint DIR] [--json]

Read it side by side with `mnist_jax/evaluate.py`. A ``weights.safetensors`` written by
`python -m mnist_jax.train` evaluates here to the JAX run's own test accuracy: the file is in
PyTorch's layout, and the two models compute the same function (see tests/test_weights.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

if __name__ == "__main__":
    # Check the command line before the imports below load PyTorch (seconds, about 1 GB): a bad flag or a
    # path that cannot work then fails at once, with argparse's usage and one error line (exit status 2).
    from mnist_common import interrupts
    from mnist_common.cli import check_command_line

    interrupts.install("python -m mnist_torch.evaluate")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("evaluate", "torch", sys.argv[1:])  # parsed once: main runs what was checked

from mnist_common.cli import parse_model_args
from mnist_common.config import default_out_dir
from mnist_common.errors import ProjectError
from mnist_common.report import format_evaluation
from mnist_torch.checkpoint import checkpoint_path, load_model
from mnist_torch.data import Split, load_mnist
from mnist_torch.runtime import resolve_device
from mnist_torch.steps import evaluate
from mnist_torch.weights import load_weights


def main(argv: Sequence[str] | None = None, checked: argparse.Namespace | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    args = checked or parse_model_args("evaluate", "torch", argv)
    try:
        device = resolve_device(args.device)
        if args.weights is not None:
            source, model = args.weights, load_weights(args.weights, device)
        else:
            out_dir = args.checkpoint or default_out_dir("torch")
            source, model = checkpoint_path(out_dir), load_model(out_dir, device)
        test = load_mnist(args.data_dir).test
    except ProjectError as err:  # the project's own errors: their message is the whole line
        sys.exit(f"error: {err}")
    loss, accuracy = evaluate(model, Split(test.images.to(device), test.labels.to(device)))
    total = len(test.labels)
    print(format_evaluation("torch", str(source), str(device), loss, round(accuracy * total), total, args.json))


if __name__ == "__main__":
    main(checked=CHECKED)
