"""Paired latency: each timed explanation call is bracketed by one plain inference of the same model in the
same runtime just before and one just after it. The ratio of a call to the mean of its two neighbours is
immune to the slow drifts of a shared machine (other processes, frequency changes), which would otherwise
move the method's and the baseline's medians apart when they are measured at different moments.

An untimed plain inference runs first: right after a torch call, torch's OpenMP threads keep spinning for a
while and slow the next OpenVINO inference down by ~50 % on 2 cores (measured), so whichever runtime ran
last must not decide the first timed call."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn's result, wall seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


class Timer:
    """Collects paired timings. ``plain`` maps a runtime name ('OpenVINO', 'torch') to a function running
    one plain inference of the model on a given input."""

    def __init__(self, plain: dict[str, Callable[[np.ndarray], Any]]) -> None:
        self.plain = plain
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.ratios: dict[str, list[float]] = defaultdict(list)

    def call(self, name: str, runtime: str, fn: Callable[[], Any], x: np.ndarray) -> Any:
        """Run ``fn`` (an explanation of ``x``) timed, between two plain inferences of ``x`` in ``runtime``.
        A runtime without a plain function (the centre baseline) is run untimed."""
        plain = self.plain.get(runtime)
        if plain is None:
            return fn()
        plain(x)  # settle: let the other runtime's worker threads go idle
        before = timed(lambda: plain(x))[1]
        out, seconds = timed(fn)
        after = timed(lambda: plain(x))[1]
        self.seconds[name].append(seconds)
        self.ratios[name].append(seconds / ((before + after) / 2))
        self.seconds[f"plain {runtime}"] += [before, after]
        return out

    def summary(self, name: str) -> dict[str, float]:
        """{ms: median call time, ratio: median paired ratio to plain, calls}; ratio 1 for the plain rows."""
        ms = 1000 * statistics.median(self.seconds[name])
        ratio = statistics.median(self.ratios[name]) if name in self.ratios else 1.0
        return {"ms": ms, "ratio": ratio, "calls": len(self.seconds[name])}
