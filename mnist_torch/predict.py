"""Name the digit in your own pictures with a trained CNN.

Usage: python -m mnist_torch.predict IMAGE... [--weights FILE.safetensors | --checkpoint DIR] [--json]

Read it side by side with `mnist_jax/predict.py`. Each picture (PNG or JPEG, any size, a
light or dark background) is brought to MNIST's form by `mnist_common.images.load_digit`,
shared by both frameworks. Each picture gets its own answer line, or its own error line on
stderr when it holds no digit; the status is then 1, once every other picture is answered.
With --weights, the model is a ``weights.safetensors`` of either framework, as for evaluate; without it or
--checkpoint, the latest checkpoint of `python -m mnist_torch.train` in its default out-dir.
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

    interrupts.install("python -m mnist_torch.predict")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("predict", "torch", sys.argv[1:])  # parsed once: main runs what was checked

import numpy as np
import torch

from mnist_common.cli import parse_model_args
from mnist_common.config import default_out_dir
from mnist_common.errors import ProjectError
from mnist_common.images import load_digits
from mnist_common.report import say_predictions
from mnist_torch.checkpoint import load_model
from mnist_torch.runtime import resolve_device
from mnist_torch.steps import predict
from mnist_torch.weights import load_weights


def main(argv: Sequence[str] | None = None, checked: argparse.Namespace | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    args = checked or parse_model_args("predict", "torch", argv)
    images, errors = load_digits(args.images)  # (N, 28, 28) for the pictures that have a digit
    probabilities = np.zeros((0, 10), np.float32)
    if len(images):
        try:
            device = resolve_device(args.device)
            if args.weights is not None:
                model = load_weights(args.weights, device)
            else:
                model = load_model(args.checkpoint or default_out_dir("torch"), device, "predict")
        except ProjectError as err:  # the project's own errors: their message is the whole line
            sys.exit(f"error: {err}")
        probabilities = predict(model, torch.from_numpy(images[:, None]).to(device))  # (N, 1, 28, 28): NCHW
    say_predictions(args.images, probabilities, args.json, errors)


if __name__ == "__main__":
    main(checked=CHECKED)
