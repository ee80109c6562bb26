"""The trainers' --profile (`mnist_common.profiling`): which calls are captured, in-process; and what each trainer's
trace file, written by its framework's profiler, must name (checked on tests/test_resume.py's e2e run). The per-kernel
profile experiment is tests/test_profile_experiment.py's."""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_common.profiling import PROFILED_CALLS, StepWindow

REPO = Path(__file__).resolve().parent.parent


def test_the_window_captures_a_few_calls_after_the_first_and_ends_after_the_device_finished(tmp_path):
    seen: list[str] = []

    @contextlib.contextmanager
    def capture(folder: Path) -> Iterator[None]:
        seen.append(f"start {folder.name}")
        yield
        seen.append("stop")

    with StepWindow(tmp_path / "trace", 10, capture) as window:
        for index in range(10):
            window.before(index, 16)
            seen.append(f"call {index}")
            window.after(index, lambda index=index: seen.append(f"wait {index}"))
    last = PROFILED_CALLS
    assert seen[:2] == ["call 0", "start trace"]
    assert seen[seen.index("start trace") : seen.index("stop") + 1] == [
        "start trace",
        *[f"call {i}" for i in range(1, last)],
        f"call {last}",
        f"wait {last}",
        "stop",
    ]
    assert window.done and window.steps == 16 * PROFILED_CALLS and (tmp_path / "trace").is_dir()
    one = StepWindow(tmp_path / "one", 1, capture)  # an epoch of one call: that call
    assert (one.first, one.last) == (0, 0)
    assert not StepWindow(None, 10, capture).done


def test_an_error_inside_the_window_ends_the_capture(tmp_path):
    seen: list[str] = []

    @contextlib.contextmanager
    def capture(folder: Path) -> Iterator[None]:
        yield
        seen.append("stop")

    with pytest.raises(KeyboardInterrupt), StepWindow(tmp_path, 10, capture) as window:
        window.before(1, 1)
        raise KeyboardInterrupt
    assert seen == ["stop"]


def assert_the_trace_names_the_steps_convolutions(framework: str, folder: Path) -> None:
    """The trace `--profile folder` wrote, in the framework's own format, names the training step's convolutions
    (forward and backward). tests/test_resume.py's e2e run captures it, in a run whose weights it checks too."""
    if framework == "torch":
        (trace,) = folder.glob("*.pt.trace.json")
        text = trace.read_text()
        assert "aten::convolution" in text and "autograd::engine::evaluate_function: ConvolutionBackward0" in text
    else:
        (trace,) = folder.glob("plugins/profile/*/perfetto_trace.json.gz")
        assert list(folder.glob("plugins/profile/*/*.xplane.pb"))  # TensorBoard's profile plugin reads this one
        with gzip.open(trace, "rt") as f:
            events = json.load(f)
        events = events["traceEvents"] if isinstance(events, dict) else events
        ops = {e.get("args", {}).get("hlo_op", "") for e in events}
        assert any(op.startswith("convolution") for op in ops), sorted(ops)[:40]


@pytest.mark.e2e  # PyTorch's profiler (kineto) sets up its logging once per process: a fresh one, as a user's run
def test_a_profiled_cpu_run_prints_no_line_of_the_profilers_own(tmp_path):
    """Kineto, writing the trace, asks CUDA for its devices and logs "ERROR ... gpuGetDeviceCount failed" where there
    is no GPU driver, and its start and stop lines: a successful run on the CPU prints none of them."""
    done = subprocess.run(
        [sys.executable, "-m", "mnist_torch.train", "--epochs", "1", "--train-size", "1280", "--quiet"]
        + ["--device", "cpu", "--profile", str(tmp_path / "trace"), "--out-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert list((tmp_path / "trace").glob("*.pt.trace.json")) and done.stdout.startswith("test accuracy ")
