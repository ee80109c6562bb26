"""What an out-dir already holds, and whether a new training run may write there, shared by both trainers.

A folder holding a run (its metrics.json, checkpoint or weights) is continued (--resume, same framework)
or replaced on request (--overwrite), never silently: otherwise a second run would replace the first's
results. A run of the other framework is refused either way unless --overwrite: the two would mix.
Checked under the out-dir's lock (`mnist_common.files.out_dir_lock`), before anything is written.
Imports only the standard library and this project's own light modules, like `mnist_common.config`.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnist_common import interrupts
from mnist_common.config import TrainConfig
from mnist_common.errors import ProjectError

#: The frameworks' names, for messages (and in a checkpoint's header).
FRAMEWORKS = {"torch": "PyTorch", "jax": "JAX"}

#: Each framework's checkpoint file inside an out-dir (`mnist_torch.checkpoint`, `mnist_jax.checkpoint`).
CHECKPOINT_FILES = {"torch": "checkpoint.pt", "jax": "checkpoint.msgpack"}

METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "weights.safetensors"
PLOT_FILES = ("curves.png", "confusion.png", "misclassified.png")

#: The files whose presence means a folder holds a run, and which --overwrite replaces (the plots with them).
RESULT_FILES = (METRICS_FILE, *CHECKPOINT_FILES.values(), WEIGHTS_FILE)


class OutDirHoldsRun(ProjectError, RuntimeError):
    """The out-dir holds a run this one would replace or mix with; the message names the flag that allows it."""


def result_files(out_dir: Path) -> list[str]:
    """The names of the run's result files present in `out_dir` (plots only count alongside one of them)."""
    found = [name for name in RESULT_FILES if (Path(out_dir) / name).is_file()]
    return found + [name for name in PLOT_FILES if found and (Path(out_dir) / name).is_file()]


def run_framework(out_dir: Path, found: list[str]) -> str | None:
    """The framework of the run in `out_dir`: by its checkpoint's name, else its metrics.json; None if unknown."""
    frameworks = {framework for framework, name in CHECKPOINT_FILES.items() if name in found}
    if not frameworks and METRICS_FILE in found:
        try:
            frameworks = {json.loads((Path(out_dir) / METRICS_FILE).read_text()).get("framework")}
        except (OSError, ValueError, AttributeError):
            return None
    return frameworks.pop() if len(frameworks) == 1 and frameworks <= set(FRAMEWORKS) else None


def record_earlier(config: TrainConfig) -> list[str]:
    """Tell `interrupts` what a stop now keeps: under --overwrite the earlier run's files, untouched until this
    run's first write, else nothing yet (nor what an earlier run in this process kept). Called before the out-dir
    lock is taken as well as by `claim`, so that a signal landing between the two says so too. Returns the files."""
    found = result_files(config.out_dir)
    if found and config.overwrite:
        interrupts.kept(f"the earlier run's {', '.join(found)} in {config.out_dir}, as they were", resumable=False)
    else:
        interrupts.kept(None)
    return found


def claim(config: TrainConfig, framework: str) -> list[str]:
    """Refuse, in one line, a run that would replace or mix with the run already in its out-dir; return the
    earlier run's files that --overwrite replaces (`replace_earlier`, at this run's first write), else []."""
    out_dir = config.out_dir
    found = record_earlier(config)
    if not found or config.overwrite:
        return found
    owner = run_framework(out_dir, found)
    listed = ", ".join(found)
    what = f"a {FRAMEWORKS[owner]} run" if owner else "a run"
    if owner not in (None, framework):
        raise OutDirHoldsRun(
            f"{out_dir} holds {what} ({listed}), which a {FRAMEWORKS[framework]} run can neither resume nor share; "
            f"pass another --out-dir, or --overwrite to replace that run"
        )
    if config.resume and CHECKPOINT_FILES[framework] not in found:
        raise OutDirHoldsRun(
            f"{out_dir} holds {what} ({listed}) but no {CHECKPOINT_FILES[framework]} to resume from; "
            f"pass --overwrite instead of --resume to replace that run, or another --out-dir"
        )
    if not config.resume:
        raise OutDirHoldsRun(
            f"{out_dir} already holds {what} ({listed}); pass --resume to continue it, --overwrite to replace it, "
            f"or another --out-dir"
        )
    return []


def replace_earlier(out_dir: Path, earlier: list[str]) -> list[str]:
    """Remove the earlier run's files that --overwrite replaces, just before this run's first write, so that
    a run ending before it has written anything leaves them as they were, and a run never mixes with them.
    Returns [], what is left to replace."""
    for name in earlier:
        (Path(out_dir) / name).unlink(missing_ok=True)
    if earlier:
        interrupts.kept(None)  # the earlier run is gone; the checkpoint about to be written is kept next
    return []
