"""Name the digit in your own pictures with a trained CNN.

Usage: python -m mnist_jax.predict IMAGE... [--weights FILE.safetensors | --checkpoint DIR] [--json]

Read it side by side with `mnist_torch/predict.py`. Each picture (PNG or JPEG, any size, a
light or dark background) is brought to MNIST's form by `mnist_common.images.load_digit`,
shared by both frameworks. Each picture gets its own answer line, or its own error line on
stderr when it holds no digit; the status is then 1, once every other picture is answered.
With --weights, the model is a ``weights.safetensors`` of either framework, as for evaluate; without it or
--checkpoint, the latest checkpoint of `python -m mnist_jax.train` in its default out-dir.
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

    interrupts.install("python -m mnist_jax.predict")  # Ctrl-C, SIGTERM, SIGHUP...: one line, exit 128 + N
    CHECKED = check_command_line("predict", "jax", sys.argv[1:])  # parsed once: main runs what was checked

import jax
import numpy as np

from mnist_common.cli import parse_model_args
from mnist_common.config import default_out_dir
from mnist_common.errors import ProjectError
from mnist_common.images import load_digits
from mnist_common.report import say_predictions
from mnist_jax.checkpoint import load_params
from mnist_jax.runtime import resolve_device
from mnist_jax.steps import predict
from mnist_jax.weights import load_weights


def main(argv: Sequence[str] | None = None, checked: argparse.Namespace | None = None) -> None:
    """Run the command on ``argv`` (default: sys.argv[1:]), or on `checked`, the command line the
    ``__main__`` block already parsed and checked before the framework's imports."""
    args = checked or parse_model_args("predict", "jax", argv)
    images, errors = load_digits(args.images)  # (N, 28, 28) for the pictures that have a digit
    probabilities = np.zeros((0, 10), np.float32)
    if len(images):
        try:
            device = resolve_device(args.device)
            if args.weights is not None:
                params = load_weights(args.weights, device)
            else:
                params = load_params(args.checkpoint or default_out_dir("jax"), device, "predict")
        except ProjectError as err:  # the project's own errors: their message is the whole line
            sys.exit(f"error: {err}")
        probabilities = predict(params, jax.device_put(images[..., None], device))  # (N, 28, 28, 1): NHWC
    say_predictions(args.images, probabilities, args.json, errors)


if __name__ == "__main__":
    main(checked=CHECKED)
