"""Move trained weights between the PyTorch reference and the Flax mirror, both ways, exactly.

The two models hold the same numbers in different layouts:

| layer | PyTorch (`state_dict`)        | Flax (`params`)                 |
|-------|-------------------------------|---------------------------------|
| conv  | weight (O, I, H, W), bias (O) | kernel (H, W, I, O), bias (O)   |
| dense | weight (out, in), bias (out)  | kernel (in, out), bias (out)    |
| fc1   | inputs ordered (c, h, w)      | inputs ordered (h, w, c)        |

fc1 is the subtle one: PyTorch flattens NCHW feature maps channel-major, Flax flattens
NHWC ones channel-minor, so fc1's input rows are permuted, not just transposed.
Only transposes and reshapes are involved: a round trip is bit-exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

Params = dict[str, Any]

CONV_LAYERS = ("conv1", "conv2")
DENSE_LAYERS = ("fc1", "fc2")
FC1_INPUT_CHW = (64, 7, 7)  # the feature map entering fc1, as PyTorch lays it out


def _fc1_torch_to_flax(weight: np.ndarray) -> np.ndarray:
    out = weight.shape[0]
    c, h, w = FC1_INPUT_CHW
    return weight.reshape(out, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, out)


def _fc1_flax_to_torch(kernel: np.ndarray) -> np.ndarray:
    out = kernel.shape[1]
    c, h, w = FC1_INPUT_CHW
    return kernel.reshape(h, w, c, out).transpose(3, 2, 0, 1).reshape(out, c * h * w)


def params_from_torch(state_dict: Mapping[str, torch.Tensor]) -> Params:
    """A `mnist_torch.model.CNN` state_dict -> Flax variables ``{"params": ...}`` for `mnist_jax.model.CNN`."""
    sd = {k: v.detach().cpu().numpy() for k, v in state_dict.items()}
    params: Params = {}
    for name in CONV_LAYERS:
        params[name] = {"kernel": sd[f"{name}.weight"].transpose(2, 3, 1, 0), "bias": sd[f"{name}.bias"]}
    params["fc1"] = {"kernel": _fc1_torch_to_flax(sd["fc1.weight"]), "bias": sd["fc1.bias"]}
    params["fc2"] = {"kernel": sd["fc2.weight"].T, "bias": sd["fc2.bias"]}
    return {"params": jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a)), params)}


def params_to_torch(variables: Params) -> dict[str, torch.Tensor]:
    """Flax variables ``{"params": ...}`` -> a state_dict that `mnist_torch.model.CNN` loads strictly."""
    p = jax.tree.map(np.asarray, variables["params"])
    sd: dict[str, np.ndarray] = {}
    for name in CONV_LAYERS:
        sd[f"{name}.weight"] = p[name]["kernel"].transpose(3, 2, 0, 1)
        sd[f"{name}.bias"] = p[name]["bias"]
    sd["fc1.weight"] = _fc1_flax_to_torch(p["fc1"]["kernel"])
    sd["fc1.bias"] = p["fc1"]["bias"]
    sd["fc2.weight"] = p["fc2"]["kernel"].T
    sd["fc2.bias"] = p["fc2"]["bias"]
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}  # a writable, contiguous copy
