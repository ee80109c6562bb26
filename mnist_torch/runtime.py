"""Where the PyTorch trainer runs and how its compiler is kept working: the machinery around the steps, apart.

The device (`resolve_device`), PyTorch's deterministic settings (`deterministic`), and the repair of
Inductor's cache after an interrupted compilation (`repair_inductor_cache`), which `torch.compile`'s modes
run before they compile.

Mirrors `mnist_jax/runtime.py`: the names both define correspond, in the same order
(tests/test_architecture.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from mnist_common.config import DeviceUnavailable, DistributedError, TrainConfig, per_device_batch
from mnist_common.errors import ProjectError
from mnist_common.files import first_line
from mnist_common.outdir import write_failure
from mnist_common.run import Prepared
from mnist_torch.data import Split
from mnist_torch.parallel import World, finish, lost_process, start_processes
from mnist_torch.steps import TrainState
from mnist_torch.tuned import Steps, compile_steps


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda was asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


@contextlib.contextmanager
def processes(config: TrainConfig) -> Iterator[tuple[World, torch.device]]:
    """The run's processes (torchrun's process group; nothing for one process) and this one's device, checked for
    the --mode and the batch to split among them; the process group is left when the run ends."""
    device = resolve_device(config.device)
    world = start_processes(config, device.type)
    try:
        check_mode(config, device, world.size)  # a --mode that cannot run here: one line, before any work
        per_device_batch(config.batch_size, world.size, f"{world.size} processes")
        yield world, torch.device("cuda", world.local_rank) if world.size > 1 and device.type == "cuda" else device
    finally:
        finish(world)


def check_mode(config: TrainConfig, device: torch.device, processes: int) -> None:
    """Refuse, before any work, a --mode that cannot run here: CUDA graphs without a CUDA GPU, or a whole-step mode
    (compiled or captured, without DistributedDataParallel's gradient averaging) under torchrun."""
    if config.mode == "cuda-graphs" and device.type != "cuda":
        raise DeviceUnavailable(
            f"--mode cuda-graphs captures CUDA graphs and needs a CUDA GPU, but this run is on {device}; "
            "use --mode eager or --mode compile, or --device cuda on a machine with a GPU"
        )
    if config.mode in ("cuda-graphs", "compile-step") and processes > 1:
        raise DistributedError(
            f"--mode {config.mode} compiles one process's whole step, without DistributedDataParallel's gradient "
            "averaging, and does not run under torchrun; use --mode eager or --mode compile with several processes"
        )


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Make two runs with the same flags compute the same bits, for the duration of a run: PyTorch's
    deterministic algorithms only. The previous settings come back afterwards (the benchmarks measure
    the steps at full speed in the same process).

    On the CPU this changes nothing measurable; on CUDA it keeps cuDNN from choosing kernels by timing
    (`cudnn.benchmark`) and from atomics-based ones, and cuBLAS needs a fixed workspace for it
    (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so set before any CUDA work). Set by the trainer,
    not left to the user; the README's "Reproducibility" says what holds on which device.

    `enabled=False` (--nondeterministic) runs PyTorch at its fastest instead: no deterministic algorithms,
    and cuDNN autotuning (`cudnn.benchmark = True`, kernels chosen by timing them); on the CPU neither
    changes a bit.
    """
    inductor_cache()  # torch.use_deterministic_algorithms loads Inductor, which makes its cache folder
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def preparing(config: TrainConfig) -> str:
    """What an interrupt is named while the run's step is prepared."""
    return "during compilation" if config.mode in ("compile", "compile-step") else "while preparing the train step"


#: What prepare_steps did, for the line the trainer prints.
PREPARED = {
    "compile": "compiled the train step with torch.compile",
    "compile-step": "compiled the whole train step (forward, backward, SGD) with torch.compile(fullgraph=True)",
    "cuda-graphs": "captured the train step as a CUDA graph",
}


def prepare_steps(
    state: TrainState, train: Split, config: TrainConfig, world: World
) -> tuple[TrainState, Steps, Prepared]:
    """The run's training step in --mode `config.mode` (`mnist_torch.tuned.compile_steps`), Inductor's cache repaired
    first where it compiles, with the seconds and the line the trainer prints (none in eager mode)."""
    if config.mode in ("compile", "compile-step"):
        repair_inductor_cache()
    state, steps, seconds = compile_steps(state, train, config, world)
    return state, steps, Prepared(seconds, None if seconds is None else f"{PREPARED[config.mode]} in {seconds:.2f}s")


def failure(err: Exception, config: TrainConfig) -> str | None:
    """The one line an error that ends a run gives (the project's own, a disk or folder the out-dir cannot be
    written to, a lost process under torchrun, a damaged compiled kernel); None for an error that is a bug."""
    if isinstance(err, ProjectError):
        return str(err)
    if isinstance(err, OSError):
        return inductor_cache_failure(err, config) or write_failure(err, config.out_dir)
    return lost_process(err, config) or damaged_kernel(err)


def inductor_cache_failure(err: OSError, config: TrainConfig) -> str | None:
    """A write into Inductor's cache folder that failed while compiling (a full disk, a folder made read-only), as
    `inductor_cache_line`; None for an error of any other file."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # Inductor sets it to its folder (its default too) when loaded
    if not folder or not err.filename or not Path(os.path.abspath(err.filename)).is_relative_to(folder):
        return None
    return inductor_cache_line(err, folder)


#: How long ago a zero-byte file in Inductor's cache must have been written to be taken for one left by an
#: interrupted compilation, not one a compiler (of another run) is writing now.
STALE_SECONDS = 60


def repair_inductor_cache() -> list[Path]:
    """Remove the zero-byte ``.so`` and ``.o`` files from Inductor's cache (TORCHINDUCTOR_CACHE_DIR, or its
    default folder), saying so in one line on stderr; returns them.

    Inductor builds each compiled kernel straight into its cache under its final name, and skips the build
    of a file that exists: a compilation interrupted (Ctrl-C, SIGTERM) while the C++ compiler writes one
    leaves an empty ``.so`` (or ``.o``) there, and every later compilation that needs it failed with an
    ``InductorError: ... file too short`` of about 90 lines. Removed, it is rebuilt by the next compilation.
    """
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    root = Path(cache_dir())
    now = time.time()
    damaged = []
    for path in (p for p in root.rglob("*.*o") if p.suffix in (".so", ".o")):
        with contextlib.suppress(OSError):
            status = path.stat()
            if status.st_size == 0 and now - status.st_mtime > STALE_SECONDS:
                path.unlink()
                damaged.append(path)
    if damaged:
        print(
            f"note: removed {len(damaged)} empty compiled kernel file{'s' if len(damaged) > 1 else ''} "
            "(.so, .o) that an "
            f"interrupted compilation left in Inductor's cache {root}; this compilation rebuilds what it needs",
            file=sys.stderr,
            flush=True,
        )
    return damaged


class InductorCacheError(ProjectError, RuntimeError):
    """Inductor's cache folder cannot be used; the message names TORCHINDUCTOR_CACHE_DIR, which fixes it."""


def inductor_cache() -> None:
    """Refuse a TORCHINDUCTOR_CACHE_DIR that cannot be made or written (a file by that name, a path through a file,
    no permission) with `InductorCacheError`. Checked here, without loading Inductor: loading it (every run does, in
    torch.use_deterministic_algorithms) makes the folder, and failed with an OSError that read as the --out-dir's;
    Inductor's default folder failing is named by `inductor_cache_failure`."""
    named = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if named is None:
        return
    try:
        os.makedirs(os.path.abspath(named), exist_ok=True)
        if not os.access(named, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), named)
    except OSError as err:
        raise InductorCacheError(inductor_cache_line(err, named)) from None


def inductor_cache_line(err: OSError, named: str | None) -> str:
    """The one line for Inductor's cache folder failing: the variable that names it (`named`), why, and what to
    set."""
    return (
        f"TORCHINDUCTOR_CACHE_DIR={named}, the cache folder of PyTorch's compiler Inductor (which every run loads), "
        f"cannot be used ({err.strerror or err}); set TORCHINDUCTOR_CACHE_DIR to a folder you can write, or unset it "
        f"for Inductor's default"
    )


def damaged_kernel(err: Exception) -> str | None:
    """A kernel in Inductor's cache damaged otherwise than `repair_inductor_cache` sees ("file too short"), as one
    line saying what to remove; None for any other error."""
    if "file too short" not in str(err):
        return None
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return (
        f"torch.compile read a damaged compiled kernel from Inductor's cache ({first_line(err)}); "
        f"remove the folder {cache_dir()} (a cache: it is rebuilt) and run again"
    )


def versions() -> dict[str, str]:
    """The libraries' versions metrics.json records. torchvision is loaded with the data (`mnist_torch.data`),
    not at start-up."""
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__}
