"""Paired latency inside the evaluation loop: each timed explanation call is bracketed by one plain inference of
the same model in the same runtime just before and one just after it. The ratio of a call to the mean of its two
neighbours is immune to the slow drifts of a shared machine (other processes, frequency changes), which would
otherwise move the method's and the baseline's medians apart when they are measured at different moments.
(The calls are interleaved with the metrics' work, so ``harness.alternate``'s rounds do not apply here; the
speed-only benchmark, ``speed.py``, uses them.)

An untimed plain inference runs first: right after a torch call, torch's OpenMP threads keep spinning for a
while and slow the next OpenVINO inference down by ~50 % on 2 cores (measured), so whichever runtime ran
last must not decide the first timed call.

Noise: the harness's rule (``tools/harness.py``): a call counts only if neither it nor its two neighbours lost
more than ``MAX_LOST_SHARE`` of its time to other processes; with too few clean calls, all of them are used."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from tools.harness import Summary, enough_clean, measure


class Timer:
    """Collects paired timings. ``plain`` maps a runtime name ('OpenVINO', 'torch') to a function running
    one plain inference of the model on a given input. ``seconds`` and ``ratios`` keep every call; ``clean``
    says which ones passed the noise rule."""

    def __init__(self, plain: dict[str, Callable[[np.ndarray], Any]]) -> None:
        self.plain = plain
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.ratios: dict[str, list[float]] = defaultdict(list)
        self.clean: dict[str, list[bool]] = defaultdict(list)

    def call(self, name: str, runtime: str, fn: Callable[[], Any], x: np.ndarray) -> Any:
        """Run ``fn`` (an explanation of ``x``) timed, between two plain inferences of ``x`` in ``runtime``.
        A runtime without a plain function (the centre baseline) is run untimed."""
        plain = self.plain.get(runtime)
        if plain is None:
            return fn()
        plain(x)  # settle: let the other runtime's worker threads go idle
        before = measure(lambda: plain(x))
        run = measure(fn)
        after = measure(lambda: plain(x))
        clean = all(r.load.clean() for r in (before, run, after))
        self.seconds[name].append(run.seconds)
        self.ratios[name].append(run.seconds / ((before.seconds + after.seconds) / 2))
        self.clean[name].append(clean)
        self.seconds[f"plain {runtime}"] += [before.seconds, after.seconds]
        self.clean[f"plain {runtime}"] += [clean, clean]
        return run.value

    def _used(self, name: str, values: list[float]) -> list[float]:
        clean = self.clean[name]
        if not enough_clean(sum(clean), len(clean)):
            return values
        return [v for v, ok in zip(values, clean, strict=True) if ok]

    def summary(self, name: str) -> dict[str, float]:
        """{ms: median call time, ratio: median paired ratio to plain, calls: calls used, calls_timed}; ratio 1
        for the plain rows."""
        seconds = self._used(name, self.seconds[name])
        ratio = statistics.median(self._used(name, self.ratios[name])) if name in self.ratios else 1.0
        return {"ms": 1000 * Summary.of(seconds).median, "ratio": ratio, "calls": len(seconds),
                "calls_timed": len(self.seconds[name])}  # fmt: skip
