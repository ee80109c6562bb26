"""Where the JAX trainer runs and how its compiler is set up: the machinery around the steps, apart from them.

The device (`resolve_device`), XLA's deterministic GPU ops (`deterministic`), and the start of JAX's backends
with the XLA_FLAGS check (`start_backends`, `xla_flags_problem`), each failing in one line instead of XLA's fatal
log. The persistent compilation cache is `mnist_jax.compilation_cache`; the compiler options of the training
steps are a tuned form, in `mnist_jax.tuned`.

Mirrors `mnist_torch/runtime.py`: the names both define correspond, in the same order
(tests/test_architecture.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import jax
from jax.sharding import Mesh

from mnist_common.config import DeviceUnavailable, TrainConfig, per_device_batch
from mnist_common.errors import ProjectError
from mnist_common.outdir import write_failure
from mnist_common.run import Prepared
from mnist_jax.compilation_cache import (
    count_cache_lookups,
    current_cache_dir,
    describe_lookups,
    use_compilation_cache,
)
from mnist_jax.data import Split
from mnist_jax.parallel import describe_device, lost_process, make_mesh, start_processes
from mnist_jax.steps import TrainState
from mnist_jax.tuned import Steps, compile_steps


def resolve_device(name: str) -> jax.Device:
    """This process's first device of the kind asked for (in a several-process run, its own, not process 0's);
    JAX's backends failing to start is `DeviceUnavailable` (`start_backends`)."""
    start_backends()
    if name == "auto":
        return jax.local_devices()[0]  # JAX's default backend: the GPU when one is usable
    if name == "cuda":
        try:
            return jax.local_devices(backend="gpu")[0]
        except RuntimeError:
            raise DeviceUnavailable(
                "--device cuda was asked for, but JAX sees no CUDA GPU (install with `pip install -e .[cuda]`); "
                "use --device cpu or auto"
            ) from None
    return jax.local_devices(backend="cpu")[0]


@contextlib.contextmanager
def processes(config: TrainConfig) -> Iterator[tuple[Mesh, jax.Device]]:
    """The run's processes (jax.distributed, started before any backend; nothing for one process) and this one's
    device, with every process's devices as one mesh, the batch checked to split among them, and the persistent
    compilation cache in use before anything compiles. JAX leaves jax.distributed at exit."""
    start_processes(config)
    device = resolve_device(config.device)
    mesh = make_mesh(device.platform, config.devices)
    per_device_batch(config.batch_size, mesh.size, f"{mesh.size} devices")
    use_compilation_cache()
    yield mesh, device


#: The flag `deterministic` adds to XLA_FLAGS: one this XLA knows, which needs no probe (`start_backends`).
DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Make two runs with the same flags compute the same bits: XLA's deterministic GPU ops.

    XLA:CPU is deterministic already. XLA:GPU is not by default: autotuning picks kernels by timing
    them, and some kernels accumulate with atomics, so two identical runs can end at different accuracies
    without this and byte-identical with it (measured: docs/design.md, "The measurements behind the code").
    XLA reads XLA_FLAGS when its backend starts, so this acts in a fresh process (the command line's
    case) and not in one that has used JAX already. An XLA_FLAGS that names the option wins and is
    left exactly as written. The previous XLA_FLAGS comes back afterwards.

    An XLA_FLAGS that XLA would refuse (`xla_flags_problem`) is `XlaFlagsError`, naming the user's token,
    whether or not the option would be added: appended to, it would fail in XLA with a misleading message.
    An XLA_FLAGS naming a file of flags (XLA's other form) is left as written, since nothing can be appended
    to a file name; a note on stderr says so unless the file names the option.

    `enabled=False` (--nondeterministic) leaves XLA_FLAGS alone: XLA's default, autotuning and atomics
    allowed, its fastest on a GPU; on the CPU nothing changes.
    """
    before = os.environ.get("XLA_FLAGS")
    if (
        before is not None and (problem := xla_flags_problem(before, probe=False)) is not None
    ):  # `start_backends` probes
        raise XlaFlagsError(problem)
    flag_file = Path(before.strip()) if before and before.strip() and not before.strip().startswith("-") else None
    if enabled and flag_file is not None:
        try:
            named = "xla_gpu_deterministic_ops" in flag_file.read_text(errors="replace")
        except OSError:  # unreadable: XLA will say so when it starts
            named = False
        if not named:
            print(
                f"note: XLA_FLAGS names the flag file {flag_file}, to which nothing can be added: GPU runs are "
                f"deterministic only if it sets --xla_gpu_deterministic_ops=true",
                file=sys.stderr,
                flush=True,
            )
    elif enabled and "xla_gpu_deterministic_ops" not in (before or ""):
        os.environ["XLA_FLAGS"] = f"{before or ''} {DETERMINISTIC_FLAG}".strip()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = before


def preparing(config: TrainConfig) -> str:
    """What an interrupt is named while the run's steps are prepared."""
    return "during compilation"


def prepare_steps(
    state: TrainState, train: Split, config: TrainConfig, mesh: Mesh
) -> tuple[TrainState, Steps, Prepared]:
    """The run's training steps compiled ahead of time (`mnist_jax.tuned.compile_steps`, or Flax NNX's for --api
    nnx-*), with the seconds, the line the trainer prints and the persistent compilation cache's hits and misses."""
    if config.api == "linen":
        compile_api = compile_steps
    else:  # loaded when asked for: flax.nnx adds a third of a second to every start
        from mnist_jax.steps_nnx import compile_steps as compile_api
    with count_cache_lookups() as lookups:
        state, steps, seconds = compile_api(state, train, config, mesh)
    cache_dir = current_cache_dir()
    line = (
        f"compiled train and eval steps ({steps.describe()}, {describe_device(mesh)}) in {seconds:.2f}s "
        f"({describe_lookups(lookups, cache_dir)})"
    )
    return state, steps, Prepared(seconds, line, {"dir": None if cache_dir is None else str(cache_dir), **lookups})


def failure(err: Exception, config: TrainConfig) -> str | None:
    """The one line an error that ends a run gives (the project's own, a disk or folder the out-dir cannot be
    written to, a lost process of a several-process run); None for an error that is a bug."""
    if isinstance(err, ProjectError):
        return str(err)
    if isinstance(err, OSError):
        return write_failure(err, config.out_dir)
    return lost_process(err, config)


def start_backends() -> None:
    """Start JAX's backends, as the commands' first use of JAX does (`train`, `resolve_device`): a JAX_PLATFORMS
    naming a platform this machine lacks (cuda without an NVIDIA GPU, tpu without libtpu, a misspelt name),
    or a backend plugin that fails to start, is `DeviceUnavailable` with one line, not JAX's traceback."""
    from jax._src import xla_bridge

    flags = os.environ.get("XLA_FLAGS", "")
    users = flags.replace(DETERMINISTIC_FLAG, "").strip()  # only the user's own flags cost a probe
    if users and not xla_bridge.backends_are_initialized() and (problem := xla_flags_problem(flags)) is not None:
        raise XlaFlagsError(problem)  # XLA would end the process with its own fatal log line instead
    try:
        jax.default_backend()
    except (RuntimeError, AssertionError) as err:  # jaxlib 0.10 asserts when it skips every platform (cuda, no GPU)
        raise DeviceUnavailable(_backend_failure(err)) from None


def _backend_failure(err: BaseException) -> str:
    """The error line for JAX's backends failing to start (`resolve_device`): what, why in JAX's words, and what
    to set."""
    reason = (str(err).strip().splitlines() or [""])[0].split(" (set JAX_PLATFORMS=")[0].split(" (you may need to")[0]
    platforms = jax.config.jax_platforms
    if platforms:
        reason = reason or (
            "no NVIDIA GPU is visible, so JAX skipped cuda"
            if "cuda" in platforms or "gpu" in platforms
            else "JAX started none of them"
        )
        return (
            f"JAX_PLATFORMS={platforms} asks for a platform JAX cannot start on this machine ({reason}); expected "
            f"platforms present here (cpu; cuda needs an NVIDIA GPU and `pip install -e .[cuda]`); unset "
            f"JAX_PLATFORMS to let JAX choose, or set JAX_PLATFORMS=cpu"
        )
    return (
        f"JAX could not start its backends ({reason or type(err).__name__}); set JAX_PLATFORMS=cpu to skip a "
        f"failing accelerator plugin, or reinstall it"
    )


class XlaFlagsError(DeviceUnavailable):
    """An XLA_FLAGS that XLA would refuse when its backend starts (with a fatal log line); the message names the
    token."""


def xla_flags_problem(value: str, probe: bool = True) -> str | None:
    """What in an XLA_FLAGS value XLA would refuse, or None. XLA reads a value that does not start with ``-``
    as the name of a file of flags, and takes any later word starting with ``-`` for a flag; one starting
    with a single ``-`` it refuses. A flag or value this XLA does not know, `probe` finds (`xla_refuses`)."""
    import shlex  # here: the one user of it

    try:
        words = shlex.split(value)
    except ValueError:  # an unclosed quote: XLA splits on its own terms
        words = value.split()
    if not words:
        return None
    if not words[0].startswith("-") and not os.path.isfile(value.strip()):
        return (
            f"XLA_FLAGS holds {words[0]!r}, which is neither an XLA flag nor a flag file that exists (XLA would "
            f"read the whole value as a file name); expected flags starting with --, such as "
            f"--xla_gpu_deterministic_ops=true; correct or unset XLA_FLAGS"
        )
    if bad := next((w for w in words if w.startswith("-") and not w.startswith("--")), None):
        return (
            f"XLA_FLAGS holds {bad!r}, which XLA refuses: its flags start with two dashes; write "
            f"it as -{bad}, or correct or unset XLA_FLAGS"
        )
    return xla_refuses(value) if probe else None


#: A child that parses XLA_FLAGS as a backend's start does (XLA's DebugOptions), and nothing else: a tenth of a second.
XLA_FLAGS_PROBE = "from jaxlib import _jax; _jax.CompileOptions()"


@functools.cache
def xla_refuses(value: str) -> str | None:
    """The flag or value of XLA_FLAGS `value` that this XLA refuses, as one line naming it and the fix; None if it
    takes them all. XLA ends the process that reads an unknown flag with a fatal log line, so a child reads them."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", XLA_FLAGS_PROBE],
            env={**os.environ, "XLA_FLAGS": value},
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):  # no child to ask (no memory, no process left): XLA says it itself
        return None
    logged = [line.split("] ", 1)[1] for line in done.stderr.splitlines() if line[:1] in "EF" and "] " in line]
    if done.returncode == 0 or not logged:  # a child failing otherwise (a memory limit) says nothing of XLA_FLAGS
        return None
    # XLA's own words: "Unknown flag in XLA_FLAGS: --xla_x=1", or "Couldn't interpret value maybe for flag xla_y."
    # before its generic "Check failed: ... Flag parsing failed."
    reasons = [line.rstrip(".") for line in logged if "Check failed" not in line] or logged[:1]
    unknown = [r.split(" in XLA_FLAGS: ", 1)[1] for r in reasons if r.startswith("Unknown flag")]
    if unknown and len(unknown) == len(reasons):
        said = f"{' '.join(unknown)}, which this XLA refuses: it knows no such flag"
    else:
        said = f"a flag or value this XLA refuses ({'; '.join(reasons)})"
    return f"XLA_FLAGS holds {said} (jaxlib {version('jaxlib')}); remove or correct it in XLA_FLAGS, or unset XLA_FLAGS"


def versions() -> dict[str, str]:
    """The libraries' versions metrics.json records."""
    import flax
    import optax

    return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "flax": flax.__version__, "optax": optax.__version__}
