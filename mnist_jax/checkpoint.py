"""Save the training state after every epoch and resume from it: the state pytree in one checked file.

Read it side by side with `mnist_torch/checkpoint.py`: the same functions. The framework
difference: the JAX state is a pytree, so it is saved as flax's msgpack of its state dict
(params, optax state, step) and restored into the structure of a freshly created state, whose
shapes and dtypes the saved arrays must match. msgpack holds data only: reading it runs no code.
Both frameworks' files are written atomically behind a SHA-256 header (`mnist_common.files`), so a
run killed mid-write leaves the previous checkpoint whole, and a damaged file is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.training.train_state import TrainState

from mnist_common.checkpoint import (
    RESUME_FIX,
    check_contents,
    check_dtypes,
    check_finite,
    check_not_foreign,
    check_resumable,
    read_payload,
    records_from_json,
    records_to_json,
    train_fix,
    unreadable,
)
from mnist_common.config import TrainConfig
from mnist_common.files import checked_bytes, write_atomically
from mnist_common.outdir import CHECKPOINT_FILES
from mnist_common.report import EpochRecord

#: Why a checkpoint would hold 64-bit arrays, for the one line that refuses it.
X64 = "written with 64-bit JAX enabled (JAX_ENABLE_X64)?"

#: The file inside a run's out-dir.
CHECKPOINT_FILE = CHECKPOINT_FILES["jax"]


def checkpoint_path(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINT_FILE


def save_checkpoint(out_dir: Path, state: TrainState, records: list[EpochRecord], config: TrainConfig) -> Path:
    """Write the state after ``records[-1].epoch`` atomically: a crash mid-write leaves the previous checkpoint
    whole."""
    meta = {"epoch": records[-1].epoch, "records": records_to_json(records), "config": config.to_json()}
    payload = serialization.msgpack_serialize(
        {"meta": json.dumps(meta), "state": serialization.to_state_dict(host_arrays(state))}
    )
    data = checked_bytes("jax", payload)
    return write_atomically(checkpoint_path(out_dir), lambda partial: partial.write_bytes(data))


def host_arrays(tree: Any) -> Any:
    """Every leaf as a NumPy array of JAX's dtype (a fresh state's step is a Python int; a trained one's is int32)."""
    return jax.device_get(jax.tree.map(jnp.asarray, tree))


def _read(out_dir: Path, fix: str) -> dict[str, Any]:
    """The checkpoint's meta (epoch, records, config) and its state as nested dicts of NumPy arrays."""
    path = checkpoint_path(out_dir)
    payload = read_payload(out_dir, path, "jax", fix)
    try:
        saved = serialization.msgpack_restore(payload)
        saved = {**json.loads(saved["meta"]), "state": saved["state"]}
    except Exception as err:  # whole and ours, but not what this version writes: say which, never a traceback
        raise unreadable(path, err) from None
    check_contents(path, saved, {"state"})
    return saved


def restore_into(path: Path, target: Any, saved: Any) -> Any:
    """``saved`` (nested dicts of arrays) in the structure of ``target``, refused unless every shape and dtype agree."""
    try:
        restored = serialization.from_state_dict(target, saved)
    except (ValueError, KeyError, TypeError) as err:
        raise unreadable(path, err) from None
    pairs = [
        (jax.tree_util.keystr(where), jnp.asarray(want), np.asarray(got))  # a fresh state's Python-int step: int32
        for (where, want), got in zip(jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(restored))
    ]
    check_dtypes(
        path, {name: str(got.dtype) for name, _, got in pairs}, {name: str(want.dtype) for name, want, _ in pairs}, X64
    )
    for name, want, got in pairs:
        if got.shape != want.shape:
            raise unreadable(
                path,
                ValueError(f"{name} is {got.dtype}{list(got.shape)}, expected {want.dtype}{list(want.shape)}"),
            )
    return restored


def load_checkpoint(out_dir: Path, state: TrainState, config: TrainConfig) -> tuple[TrainState, list[EpochRecord]]:
    """The checkpoint restored into the structure, dtypes and devices of ``state`` (a freshly created one)."""
    saved = _read(out_dir, RESUME_FIX)
    check_resumable(saved["config"], saved["epoch"], config, Path(out_dir))
    restored = restore_into(checkpoint_path(out_dir), state, saved["state"])
    check_finite(checkpoint_path(out_dir), named_leaves(restored))
    on_devices = jax.tree.map(
        lambda want, got: jax.device_put(got, want.sharding) if isinstance(want, jax.Array) else got, state, restored
    )  # where the fresh state is: the same device as the run
    return on_devices, records_from_json(saved["records"])


def load_params(out_dir: Path, device: jax.Device, command: str = "evaluate") -> Any:
    """The trained parameters of a run's checkpoint on ``device``, for prediction and evaluation.

    Read without a target structure (no optimizer needs creating): the params are the part of the
    saved state dict the model needs; the model's apply checks their shapes.
    """
    check_not_foreign(out_dir, "jax", command)  # `command` (evaluate, predict) names the other's that reads it
    saved = _read(out_dir, train_fix("jax"))
    params = saved["state"].get("params") if isinstance(saved["state"], dict) else None
    if not isinstance(params, dict):
        raise unreadable(checkpoint_path(out_dir), KeyError("the state has no params"))
    found = {name: str(np.asarray(leaf).dtype) for name, leaf in named_leaves(params, floating=False).items()}
    check_dtypes(checkpoint_path(out_dir), found, dict.fromkeys(found, "float32"), X64)
    check_finite(checkpoint_path(out_dir), named_leaves(params))
    return jax.device_put(params, device)


def named_leaves(tree: Any, floating: bool = True) -> dict[str, Any]:
    """The pytree's arrays (floating-point ones only, unless not `floating`) by their path
    (`['params']['conv1']['kernel']`), for messages that name them."""
    return {
        jax.tree_util.keystr(path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if not floating or (hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating))
    }
