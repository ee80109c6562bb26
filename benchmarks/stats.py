"""The statistics every benchmark figure carries: medians with 95% intervals, paired ratios, verdicts.

A benchmark's rounds vary (the machine is shared, the clock and caches drift), so one figure alone
proves little. Each variant's rate is the median over its timed rounds, with a percentile-bootstrap
95% interval. Variants that are compared run interleaved (`interleaved_schedule`), so a ratio is taken
per pair of rounds that ran side by side, and summarized by the median of those per-pair ratios with its
own interval: drift that slows both halves of a pair cancels out. A goal counts as met only when the
interval's lower end clears it. Pure NumPy, no framework: the report and the tests use it too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
#: Fixed, so that the same rounds always give the same interval (the report can be regenerated).
BOOTSTRAP_SEED = 0
#: Fewest values an interval is computed from: below it, a bootstrap interval would pretend to a precision
#: that two or three values cannot give, and the figure is reported with no interval.
MIN_VALUES_FOR_INTERVAL = 5


def median(values: Sequence[float]) -> float:
    """The median of `values` (the mean of the middle two when their number is even)."""
    return float(np.median(np.asarray(values, dtype=float)))


def median_interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """The median of `values` and its 95% percentile-bootstrap interval ((None, None) with too few values)."""
    data = np.asarray(values, dtype=float)
    if data.size == 0 or not np.all(np.isfinite(data)):
        raise ValueError(f"need finite values, got {list(values)!r}")
    middle = median(data)
    if data.size < MIN_VALUES_FOR_INTERVAL:
        return middle, None, None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    medians = np.median(data[rng.integers(0, data.size, size=(RESAMPLES, data.size))], axis=1)
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(medians, [tail, 100 - tail])
    return middle, float(low), float(high)


def rate_summary(round_seconds: Sequence[float], work: float) -> dict[str, float | int | None]:
    """`work` per second (images/s, say) of each round: median, its interval and the number of rounds."""
    rates = [work / s for s in round_seconds]
    middle, low, high = median_interval(rates)
    return {"median": middle, "low": low, "high": high, "rounds": len(rates)}


def paired_speed_ratio(
    fast_seconds: Sequence[float | None], slow_seconds: Sequence[float | None]
) -> dict[str, float | int | None]:
    """How many times faster the first variant ran than the second, from rounds that ran side by side.

    The two lists hold the round times of one interleaved run, index i being the i-th cycle (None where a
    variant did not run in that cycle). Each cycle in which both ran gives one ratio slow/fast; the result
    is their median with its interval, and the number of pairs.
    """
    ratios = [s / f for f, s in zip(fast_seconds, slow_seconds) if f is not None and s is not None]
    if not ratios:
        return {"ratio": None, "low": None, "high": None, "pairs": 0}
    middle, low, high = median_interval(ratios)
    return {"ratio": middle, "low": low, "high": high, "pairs": len(ratios)}


def verdict(summary: dict, goal: float, key: str = "ratio") -> str:
    """Whether a figure clears `goal`, in words: met only when the interval's lower end is at or above it."""
    value, low, high = summary.get(key), summary.get("low"), summary.get("high")
    if value is None:
        return "not measured"
    if low is None or high is None:
        return f"undecided: too few values for an interval ({value:.3g} measured, goal {goal:.3g})"
    if low >= goal:
        return f"met: the whole interval {low:.3g}-{high:.3g} clears {goal:.3g}"
    if high < goal:
        return f"not met: the whole interval {low:.3g}-{high:.3g} is below {goal:.3g}"
    return f"undecided: the interval {low:.3g}-{high:.3g} contains the goal {goal:.3g}"


def interleaved_schedule(rounds: dict[str, int]) -> list[tuple[int, str]]:
    """The order in which to time the variants: (cycle, variant), cycle by cycle, each variant once per cycle
    while it still has rounds to run, the order reversed every other cycle (A B C, C B A, A B C ...) so that no
    variant always runs first or right after a particular other one."""
    names = list(rounds)
    schedule = []
    for cycle in range(max(rounds.values(), default=0)):
        order = names if cycle % 2 == 0 else names[::-1]
        schedule.extend((cycle, name) for name in order if cycle < rounds[name])
    return schedule


def timed_blocks(
    calls: dict[str, Callable[[], object]],
    blocks: int,
    per_block: int,
    drain: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[list[float]]]:
    """Each variant's calls timed one by one, in `blocks` interleaved blocks of `per_block` calls
    (`interleaved_schedule`): {variant: [[seconds of each call] per block]}. `drain[variant]`, when given, runs
    untimed after each of its blocks (waiting for queued device work, so that it does not spill into the next
    variant's block)."""
    timed: dict[str, list[list[float]]] = {name: [] for name in calls}
    for _, name in interleaved_schedule(dict.fromkeys(calls, blocks)):
        call, block = calls[name], []
        for _ in range(per_block):
            start = time.perf_counter()
            call()
            block.append(time.perf_counter() - start)
        if drain:
            drain[name]()
        timed[name].append(block)
    return timed


def mean_interval(values: Sequence[float]) -> dict[str, float | int | None]:
    """The mean of `values` and its 95% Student-t interval (low and high None for fewer than two values): for
    a figure over seeds, each seed one independent draw (the accuracy after an epoch, a time to it)."""
    from scipy import stats as scipy_stats  # jax's own dependency; here only, the suite's one use of it

    data = [float(v) for v in values]
    if not data:
        return {"mean": None, "low": None, "high": None, "n": 0}
    mean = sum(data) / len(data)
    if len(data) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = scipy_stats.t.ppf((1 + CONFIDENCE) / 2, len(data) - 1) * float(np.std(data, ddof=1)) / math.sqrt(len(data))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(data)}


def mean_and_spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation (None for one value), min and max: for accuracies and times over seeds."""
    data = [float(v) for v in values]
    if not data:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    mean = sum(data) / len(data)
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / (len(data) - 1)) if len(data) > 1 else None
    return {"mean": mean, "std": std, "min": min(data), "max": max(data), "n": len(data)}
