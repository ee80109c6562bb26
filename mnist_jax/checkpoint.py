"""Save the training state after every epoch and resume from it: orbax-checkpoint, one step per epoch.

Read it side by side with `mnist_torch/checkpoint.py`: the same functions. The framework
difference: the JAX state is a pytree, so it is saved as one (params, optax state, step)
and restored into the structure of a freshly created state, and orbax writes each step
into a temporary folder and renames it when complete, so a crash never leaves a partial
checkpoint. Saving is synchronous: the next epoch's first `train_step` donates the
state's buffers, and a background save must not read them after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax.training.train_state import TrainState

from mnist_torch.checkpoint import (  # noqa: F401  (re-exported: one set of rules and messages)
    RESUME_FIX,
    CheckpointError,
    check_finite,
    check_resumable,
    missing,
    records_from_json,
    records_to_json,
    train_fix,
    unreadable,
)
from mnist_torch.config import TrainConfig
from mnist_torch.report import EpochRecord

#: The folder inside a run's out-dir; orbax keeps one numbered step (the epoch) in it.
CHECKPOINT_DIR = "checkpoint"

OPTIONS = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)


def checkpoint_path(out_dir: Path) -> Path:
    return (Path(out_dir) / CHECKPOINT_DIR).absolute()  # orbax requires an absolute path


def save_checkpoint(out_dir: Path, state: TrainState, records: list[EpochRecord], config: TrainConfig) -> Path:
    """Save the state after ``records[-1].epoch`` as orbax step ``epoch``; the older step is removed once it is written."""
    path = checkpoint_path(out_dir)
    epoch = records[-1].epoch
    with ocp.CheckpointManager(path, options=OPTIONS) as manager:
        for stale in [s for s in manager.all_steps() if s >= epoch]:  # left by an earlier run in this out-dir
            manager.delete(stale)
        manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            meta=ocp.args.JsonSave({"epoch": epoch, "records": records_to_json(records), "config": config.to_json()}),
        ))
    return path


def _restore(out_dir: Path, fix: str, state_args: ocp.args.StandardRestore) -> Any:
    path = checkpoint_path(out_dir)
    step = None
    if path.is_dir():
        with ocp.CheckpointManager(path, options=OPTIONS) as manager:
            step = manager.latest_step()
            if step is not None:
                try:
                    return manager.restore(step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
                except Exception as err:  # a damaged or foreign checkpoint: say which, never a traceback
                    raise unreadable(path / str(step), err) from None
    raise missing(Path(out_dir), path, fix)


def load_checkpoint(out_dir: Path, state: TrainState, config: TrainConfig) -> tuple[TrainState, list[EpochRecord]]:
    """The checkpoint restored into the structure, dtypes and devices of ``state`` (a freshly created one)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = _restore(out_dir, RESUME_FIX, ocp.args.StandardRestore(abstract))
    meta = restored.meta
    check_resumable(meta["config"], meta["epoch"], config, Path(out_dir))
    check_finite(checkpoint_path(out_dir), named_leaves(restored.state))
    return restored.state, records_from_json(meta["records"])


def load_params(out_dir: Path, device: jax.Device) -> Any:
    """The trained parameters of a run's checkpoint on ``device``, for prediction and evaluation.

    Restored without a target structure (no optimizer needs creating): orbax returns the
    saved pytree as nested dicts, of which the params are the part the model needs.
    """
    restored = _restore(out_dir, train_fix("jax"), ocp.args.StandardRestore())
    check_finite(checkpoint_path(out_dir), named_leaves(restored.state["params"]))
    return jax.device_put(restored.state["params"], device)


def named_leaves(tree: Any) -> dict[str, Any]:
    """The pytree's arrays by their path (`['params']['conv1']['kernel']`), for messages that name them."""
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)}
