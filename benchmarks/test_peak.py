"""The device's float32 matrix-multiply rate: the yardstick for the training steps' GFLOP/s.

One large float32 matmul through PyTorch (MKL/oneDNN on a CPU, cuBLAS with TF32 off on a GPU) is about
the fastest float32 arithmetic a program can get out of the device, so the report states every
variant's achieved GFLOP/s as a fraction of this measured rate (a theoretical peak needs the clock
under load, which a shared or virtual machine does not report). Measured in the same suite run as the
steps it judges. Nothing asserts a rate.
"""

from __future__ import annotations

import torch

from benchmarks.conftest import environment
from benchmarks.runners import precision
from benchmarks.stats import rate_summary

#: Matrix side: large enough to run at the kernel's full rate, small enough for a quick round.
SIDE = {"cpu": 2048, "cuda": 8192}


def test_matmul_peak(benchmark, device, smoke):
    n = 256 if smoke else SIDE[device]
    with precision("float32"):  # TF32 off on a GPU: the float32 rate the float32 steps are judged against
        a, b = (torch.randn(n, n, device=device) for _ in range(2))
        torch.mm(a, b)  # warm-up: threads, kernel choice

        def matmul() -> None:
            torch.mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()

        benchmark.group = f"peak {device} float32"
        benchmark.extra_info.update(
            framework="torch",
            variant="sgemm",
            mode="peak",
            device=device,
            batch_size=n,
            precision="float32",
            compile_seconds=None,
            **environment(device),
        )
        benchmark.pedantic(matmul, rounds=2 if smoke else 20, iterations=1)
    if not benchmark.disabled:
        rate = rate_summary(benchmark.stats.stats.data, 2 * n**3 / 1e9)
        benchmark.extra_info.update(gflops=rate["median"], gflops_low=rate["low"], gflops_high=rate["high"])
