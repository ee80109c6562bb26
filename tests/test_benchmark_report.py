"""benchmarks/report.py: ratios against PyTorch eager on the same device, mode, batch and precision."""

from __future__ import annotations

import json

import pytest

from benchmarks import report

ENV = {"device_name": "Test CPU, 2 cores", "torch": "2.14.1", "jax": "0.10.2", "jaxlib": "0.10.2",
       "flax": "0.12.8", "optax": "0.2.8", "python": "3.11.7"}


def throughput(variant, images_per_s, batch_size=128, device="cpu", compile_seconds=None, peak=None):
    return {"variant": variant, "framework": variant.split("_")[0], "mode": "train", "device": device, "batch_size": batch_size,
            "precision": "float32", "images_per_s": images_per_s, "compile_seconds": compile_seconds,
            "peak_memory_bytes": peak, "memory_measure": "peak RSS of the process" if peak else None, **ENV}


def write(tmp_path, rows, name="results"):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"datetime": "2026-11-24T12:00:00", "benchmarks": [{"extra_info": r} for r in rows]}))
    return path


def test_table_ratios_chart_and_accuracy(tmp_path, capsys):
    rows = [
        throughput("torch_eager", 4000.0, peak=1536 * 2**20),
        throughput("jax_jit", 2000.0, compile_seconds=1.5),
        throughput("torch_eager", 10000.0, batch_size=1024),
        throughput("jax_jit", 15000.0, batch_size=1024, compile_seconds=2.0),
        {"variant": "jax", "framework": "jax", "mode": "accuracy", "device": "cpu", "precision": "float32",
         "epochs": 10, "test_accuracy": 0.9928, "time_to_99_s": 91.2, "train_seconds": 303.0,
         "compile_seconds": 1.8, "original_accuracy": 0.9876, **ENV},
    ]
    report.main([str(write(tmp_path, rows)), "--out-dir", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert markdown == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "| train | jax_jit | cpu | 128 | float32 | 2,000 | 0.50x | 54.8 | 1.50 | n/a |" in markdown
    assert "| train | torch_eager | cpu | 128 | float32 | 4,000 | 1.00x | 109.6 | none | 1,536 |" in markdown
    assert "| train | jax_jit | cpu | 1024 | float32 | 15,000 | 1.50x | 411.1 | 2.00 | n/a |" in markdown
    assert "Peak memory: cpu torch: peak RSS of the process." in markdown
    assert "| jax | cpu | float32 | 10 | 99.28% | 91.20 | 30.300 | 303.0 | 1.80 | 98.76% |" in markdown
    assert markdown.startswith("Measured 2026-11-24 on cpu: Test CPU, 2 cores.")
    assert (tmp_path / "out" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_without_extra_info_are_refused(tmp_path):
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps({"benchmarks": [{"extra_info": {}}]}))
    with pytest.raises(SystemExit, match="holds no benchmark results"):
        report.main([str(path)])


def test_stages_are_merged_and_a_dry_run_is_labelled(tmp_path):
    """benchmarks/gpu_run.sh writes one JSON per stage and reports them as one; a dry run says so."""
    first = write(tmp_path, [throughput("torch_eager", 4000.0)], "stage0")
    second = write(tmp_path, [{**throughput("jax_epoch", 8000.0, compile_seconds=2.0), "dry_run": True}], "stage1")
    report.main([str(first), str(second), "--out-dir", str(tmp_path / "out"), "--name", "h100"])
    merged = json.loads((tmp_path / "out" / "h100.json").read_text())
    assert [b["extra_info"]["variant"] for b in merged["benchmarks"]] == ["torch_eager", "jax_epoch"]
    markdown = (tmp_path / "out" / "h100.md").read_text()
    assert markdown.startswith("**DRY RUN**")
    assert "| train | jax_epoch | cpu | 128 | float32 | 8,000 | 2.00x | 219.3 | 2.00 | n/a |" in markdown
    assert (tmp_path / "out" / "h100.png").exists()


def latency(variant, p50, p99, device="cpu"):
    return {**ENV, "framework": variant.split("_")[0], "variant": variant, "mode": "latency", "device": device,
            "batch_size": 1, "precision": "float32", "compile_seconds": None if variant == "torch_eager" else 0.5,
            "latency_p50_ms": p50, "latency_p99_ms": p99, "images_per_s": 1000 / p50}


def test_latency_has_its_own_table_and_stays_out_of_the_throughput_chart(tmp_path, capsys):
    path = write(tmp_path, [throughput("torch_eager", 1000.0), throughput("jax_jit", 2000.0),
                            latency("torch_eager", 4.0, 9.0), latency("jax_jit", 1.0, 2.5)])
    report.main([str(path)])
    markdown = capsys.readouterr().out
    assert "| jax_jit | cpu | 1.000 | 2.500 | 4.00x | 0.50 |" in markdown
    assert "| torch_eager | cpu | 4.000 | 9.000 | 1.00x | none |" in markdown
    assert "| latency |" not in markdown  # not a throughput row


def test_gflops_against_the_measured_matmul_peak(tmp_path, capsys):
    peak = {**ENV, "framework": "torch", "variant": "sgemm", "mode": "peak", "device": "cpu", "batch_size": 2048,
            "precision": "float32", "compile_seconds": None, "gflops": 548.2}
    path = write(tmp_path, [throughput("torch_eager", 2000.0), peak])
    report.main([str(path)])
    markdown = capsys.readouterr().out
    assert "| 2,000 | 1.00x | 54.8 (10%) |" in markdown  # 2000 images/s x 27.41 MFLOP = 54.82 GFLOP/s of 548.2
    assert "Matmul peak (one float32 torch.mm, measured in this run): cpu 548 GFLOP/s." in markdown
