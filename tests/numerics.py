"""How the tests measure a difference between two results."""

from __future__ import annotations

import numpy as np


def relative_error(expected, actual) -> float:
    """Largest absolute difference, relative to the largest magnitude of the expected values.

    Computed in the inputs' own precision, widened to at least float32 (bfloat16 results are).
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    dtype = np.promote_types(np.promote_types(expected.dtype, actual.dtype), np.float32)
    expected, actual = expected.astype(dtype), actual.astype(dtype)
    return float(np.abs(expected - actual).max() / np.abs(expected).max())
