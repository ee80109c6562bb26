"""`python -m mnist_torch.train` and `python -m mnist_jax.train`: flags, errors, and a short real training run."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import jax
import pytest
import torch

from benchmarks.reproducibility import without_timings
from mnist_common.cli import parse_config
from mnist_common.config import TrainConfig
from mnist_common.weights import WEIGHTS_FILE
from mnist_jax import train as jax_train
from mnist_torch import train as torch_train

FRAMEWORKS = ["torch", "jax"]
TRAINERS = {"torch": torch_train, "jax": jax_train}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_defaults_are_shared_and_out_dir_names_the_framework(framework):
    config = parse_config(framework, [])
    assert (config.epochs, config.batch_size, config.lr, config.momentum) == (10, 128, 0.1, 0.9)
    assert str(config.out_dir) == f"runs/{framework}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "argument --batch-size: expected a positive integer, got 0"),
        (["--lr", "-0.1"], "argument --lr: expected a positive finite number, got -0.1"),
        (["--lr", "fast"], "argument --lr: expected a positive number, got 'fast'"),
        (["--momentum", "1.5"], "argument --momentum: expected a number in [0, 1), got 1.5"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--train-size", "70000"], "argument --train-size: expected at most 60000"),
        (["--train-size", "100", "--batch-size", "128"], "--batch-size: 128 is larger than --train-size 100"),
        (["--test-size", "0"], "argument --test-size: expected a positive integer, got 0"),
        (["--test-size", "10001"], "argument --test-size: expected at most 10000 (the size of the test set)"),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_invalid_values_get_an_argparse_error(framework, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(framework, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_missing_data_dir_is_one_line(framework, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TRAINERS[framework].main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path)])
    message = str(exit_info.value.code)
    assert message.startswith("error: --data-dir") and "nowhere does not exist" in message and "\n" not in message
    assert not (tmp_path / "metrics.json").exists()


def test_cuda_without_gpu_is_refused_by_both():
    if torch.cuda.is_available() or any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("a CUDA GPU is present: --device cuda is valid here")
    for trainer in TRAINERS.values():
        with pytest.raises(
            SystemExit,
            match=r"error: --device cuda was asked for, but .* sees no CUDA GPU.*; use --device cpu or auto$",
        ):
            trainer.main(["--device", "cuda", "--epochs", "1"])


def assert_learned(metrics: dict, framework: str, config: TrainConfig) -> None:
    """metrics.json of two epochs over the first 6 400 real images (100 SGD steps): the model clearly learned."""
    assert metrics["framework"] == framework
    assert metrics["config"] == config.to_json()
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert set(metrics["epochs"][0]) == {"epoch", "train_loss", "test_loss", "test_accuracy", "seconds", "images_per_s"}
    first, last = metrics["epochs"]
    assert last["train_loss"] < 0.5 * first["train_loss"] and last["train_loss"] < 1.0
    assert metrics["test_accuracy"] == last["test_accuracy"] > 0.85  # chance is 0.10; measured 0.906 (torch)
    assert last["images_per_s"] == pytest.approx(6400 / last["seconds"], rel=1e-6)
    assert (metrics["compile_seconds"] is None) == (framework == "torch")
    assert (metrics["compilation_cache"] is None) == (framework == "torch")
    libraries = ("torch", "torchvision") if framework == "torch" else ("jax", "flax", "optax")
    for name in libraries:  # as the library says of itself, build tag and all (torch's "+cu130")
        assert metrics["versions"][name] == importlib.import_module(name).__version__, name


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_shared_short_run_learns_and_writes_metrics(framework, trained_run):
    """conftest's `trained_run`, the same two epochs trained in this process (with --quiet): what the e2e test
    below checks of the real command's metrics.json, without a training run of its own."""
    out_dir = trained_run(framework)
    mode = "eager" if framework == "torch" else None  # PyTorch's --mode; JAX has one mode, compiled
    api = "linen" if framework == "jax" else None  # JAX's --api; PyTorch has one
    config = TrainConfig(epochs=2, train_size=6400, out_dir=out_dir, mode=mode, api=api, quiet=True)
    assert_learned(json.loads((out_dir / "metrics.json").read_text()), framework, config)


@pytest.mark.e2e
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_short_real_training_learns_and_writes_metrics(framework, trained_run, tmp_path):
    """Two epochs over the first 6 400 real images (100 SGD steps) by command: the model must clearly learn, and the
    run is the one `train(TrainConfig(...))` makes in this process (conftest's `trained_run`, the same flags):
    byte-identical weights, identical metrics apart from timings. So the determinism the trainers set for themselves
    (`deterministic` in both steps.py) holds where users meet it, in a fresh process; on a GPU, benchmarks/gpu_run.sh
    measures the same with `benchmarks.reproducibility` (README, "Reproducibility")."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            f"mnist_{framework}.train",
            "--epochs",
            "2",
            "--train-size",
            "6400",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/2", "2/2"]
    assert "train loss" in lines[-2] and "img/s" in lines[-2]

    mode = "eager" if framework == "torch" else None  # PyTorch's --mode; JAX has one mode, compiled
    api = "linen" if framework == "jax" else None  # JAX's --api; PyTorch has one
    config = TrainConfig(epochs=2, train_size=6400, out_dir=tmp_path, mode=mode, api=api)
    by_command = json.loads((tmp_path / "metrics.json").read_text())
    assert_learned(by_command, framework, config)

    first = trained_run(framework)  # --epochs 2 --train-size 6400, the other flags at their defaults
    assert (tmp_path / WEIGHTS_FILE).read_bytes() == (first / WEIGHTS_FILE).read_bytes()
    in_process, by_command = (
        without_timings(m) for m in (json.loads((first / "metrics.json").read_text()), by_command)
    )
    for metrics in (in_process, by_command):  # the out-dirs differ; --quiet prints less
        metrics["config"] = {k: v for k, v in metrics["config"].items() if k not in ("out_dir", "quiet")}
    assert by_command == in_process


@pytest.mark.e2e
def test_second_jax_run_loads_its_compiled_steps_from_the_persistent_cache(tmp_path):
    """`python -m mnist_jax.train` keeps its compiled steps in JAX's persistent cache: a second run compiles nothing."""
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "true", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}
    caches = []
    for run in ("first", "second"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mnist_jax.train",
                "--epochs",
                "1",
                "--train-size",
                "1280",
                "--test-size",
                "1000",
                "--out-dir",
                str(tmp_path / run),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        caches.append(json.loads((tmp_path / run / "metrics.json").read_text())["compilation_cache"])
    first, second = caches
    assert first["dir"] == second["dir"] == str(tmp_path / "xla")
    assert first["hits"] == 0 and first["misses"] > 0
    assert second == {**first, "hits": first["misses"], "misses": 0}
    assert f"{first['misses']} of {first['misses']} loaded from the compilation cache" in result.stdout
