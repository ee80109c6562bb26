"""benchmarks/report.py: ratios against PyTorch eager on the same device, mode, batch and precision."""

from __future__ import annotations

import json

import pytest

from benchmarks import report

ENV = {"device_name": "Test CPU, 2 cores", "torch": "2.14.1", "jax": "0.10.2", "jaxlib": "0.10.2",
       "flax": "0.12.8", "optax": "0.2.8", "python": "3.11.7"}


def throughput(variant, images_per_s, batch_size=128, device="cpu", compile_seconds=None):
    return {"variant": variant, "mode": "train", "device": device, "batch_size": batch_size, "precision": "float32",
            "images_per_s": images_per_s, "compile_seconds": compile_seconds, **ENV}


def write(tmp_path, rows):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"datetime": "2026-11-24T12:00:00", "benchmarks": [{"extra_info": r} for r in rows]}))
    return path


def test_table_ratios_chart_and_accuracy(tmp_path, capsys):
    rows = [
        throughput("torch_eager", 4000.0),
        throughput("jax_jit", 2000.0, compile_seconds=1.5),
        throughput("torch_eager", 10000.0, batch_size=1024),
        throughput("jax_jit", 15000.0, batch_size=1024, compile_seconds=2.0),
        {"variant": "jax_train", "framework": "jax", "mode": "accuracy", "device": "cpu", "precision": "float32",
         "epochs": 10, "test_accuracy": 0.9928, "time_to_99_s": 91.2, "train_seconds": 303.0,
         "compile_seconds": 1.8, "original_accuracy": 0.9876, **ENV},
    ]
    report.main([str(write(tmp_path, rows)), "--out-dir", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| train | jax_jit | cpu | 128 | float32 | 2,000 | 0.50x | 1.50 |" in markdown
    assert "| train | torch_eager | cpu | 128 | float32 | 4,000 | 1.00x | none |" in markdown
    assert "| train | jax_jit | cpu | 1024 | float32 | 15,000 | 1.50x | 2.00 |" in markdown
    assert "| jax | cpu | float32 | 10 | 99.28% | 91.2 | 303.0 | 1.80 | 98.76% |" in markdown
    assert "Measured 2026-11-24 on cpu: Test CPU, 2 cores." in markdown
    assert (tmp_path / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_without_extra_info_are_refused(tmp_path):
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps({"benchmarks": [{"extra_info": {}}]}))
    with pytest.raises(SystemExit, match="holds no benchmark results"):
        report.main([str(path)])
