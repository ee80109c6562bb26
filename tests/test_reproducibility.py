"""Two runs with the same flags are the same run: byte-identical weights, identical metrics apart from timings.

The first run is the session's shared `trained_run` (in this process, `train(TrainConfig(...))`), the
second a fresh `python -m mnist_<framework>.train` with the same flags in its own process, so the
determinism the trainers set for themselves (`deterministic` in each `mnist_<framework>.train`) is tested
where users meet it.
On a GPU, benchmarks/gpu_run.sh measures the same with `benchmarks.reproducibility` (README, "Reproducibility").
"""

from __future__ import annotations

import json

import pytest

from benchmarks.reproducibility import train, without_timings


@pytest.mark.e2e
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_second_run_with_the_same_flags_gives_the_same_bytes(framework, trained_run, tmp_path):
    first = trained_run(framework)  # --epochs 2 --train-size 6400, the other flags at their defaults
    second = train([f"mnist_{framework}.train"], {}, tmp_path, "cpu", epochs=2, train_size=6400)
    assert second["weights_sha256"]
    assert (tmp_path / "weights.safetensors").read_bytes() == (first / "weights.safetensors").read_bytes()
    in_process, by_command = (
        without_timings(m) for m in (json.loads((first / "metrics.json").read_text()), second["metrics"])
    )
    for metrics in (in_process, by_command):  # --device auto and cpu are one device here; --quiet prints less
        metrics["config"] = {k: v for k, v in metrics["config"].items() if k not in ("device", "quiet")}
    assert by_command == in_process
