"""The one benchmark harness of ``tools/``: alternated rounds, noise rejection, medians, markdown tables.

Every benchmark script times its variants (plain vs patched model, runtime modes, explanation methods)
the same way:

* **Alternation.** A round runs every variant once; round ``k`` starts at variant ``k mod n`` (rotation),
  so slow drifts (frequency, thermals, a neighbour's job) hit every variant alike and no variant always
  runs first or last. Untimed **warm-up** rounds come first. A variant may have a ``settle`` call, run
  untimed just before each timed run (e.g. to let another runtime's spinning threads go idle).
* **Noise rejection: one rule, one threshold.** Each run records the seconds this process's threads were
  runnable but waited for a CPU (``/proc/self/task/*/schedstat`` run delay) and the CPU seconds all
  *other* processes used meanwhile (machine CPU time, minus ours). The time a run *lost* to other
  processes is the smaller of the two: our own threads competing with each other (an async pipeline,
  torch's spinning OpenMP workers) make us wait without any other process running, and another process
  on an idle core uses CPU without delaying us. A round counts (is *clean*) only if no run in it lost
  more than :data:`MAX_LOST_SHARE` of its wall time. Rounds are repeated until ``rounds`` clean ones, or
  until :data:`MAX_ROUNDS_FACTOR` x ``rounds`` were run; if fewer than ``min(MIN_CLEAN, rounds)`` were
  clean the machine was busy throughout, every round is used and the timing is flagged *contended*.
* **Budget.** With ``budget_s``, fewer rounds (never fewer than ``min(MIN_CLEAN, rounds)``) when the
  requested ones would take longer, estimated from the last warm-up round.
* **Quiet start.** Optionally, before timing, wait a while for a one-second window in which other
  processes use under :data:`QUIET_SHARE` of the CPUs (it improves the odds; the rule above decides).
* **Summaries.** Median, p90, min, max, mean of the used rounds, and the **ratio to a baseline** variant:
  the median over rounds of ``variant / baseline`` within the same round (paired, so that drift between
  rounds cancels); the ratio of the two medians is kept beside it.

Only the standard library is imported: ``bench_openvino_xai.py`` runs this in a separate venv.
CPU accounting is Linux's; elsewhere every run counts as clean.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_LOST_SHARE = 0.02  # a run may lose at most this share of its wall time to other processes
QUIET_SHARE = 0.10  # a quiet second: other processes use under this share of all CPUs
MIN_CLEAN = 10  # fewer clean rounds than min(MIN_CLEAN, rounds): contended, all rounds used
MAX_ROUNDS_FACTOR = 5  # at most this many times the requested rounds are run

_CPUS = os.cpu_count() or 1
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_CPUACCT = Path("/sys/fs/cgroup/cpuacct/cpuacct.usage")  # cgroup v1 root: ns of CPU used by every task


# ------------------------------------------------------------------------------------------ CPU accounting


def _own_wait_s() -> float:
    """Seconds this process's threads have been runnable but waiting for a CPU (0 where unavailable)."""
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            total += int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def _proc_stat() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat in clock ticks: user nice system idle iowait irq softirq steal."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return [0] * 8


def _cpuacct_s() -> float | None:
    try:
        return int(_CPUACCT.read_text()) / 1e9
    except (OSError, ValueError):
        return None


def _whole_machine_cpuacct() -> bool:
    """Whether ``cpuacct.usage`` counts every process on the machine (not only a container's): its total since
    boot must match the busy time /proc/stat reports."""
    usage, fields = _cpuacct_s(), _proc_stat()
    busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / _TICK
    return usage is not None and busy > 0 and abs(usage - busy) <= 0.2 * busy


_USE_CPUACCT = _whole_machine_cpuacct()


def _machine_cpu_s(wall: float) -> float:
    """CPU seconds used by every process on the machine so far (a counter: only differences mean anything).

    The root cgroup's ``cpuacct.usage`` (nanoseconds, exact) where it covers the whole machine; else all CPUs'
    capacity minus their idle and iowait time from /proc/stat (10 ms steps, but not tick-sampled like its
    busy fields)."""
    usage = _cpuacct_s() if _USE_CPUACCT else None
    if usage is not None:
        return usage
    fields = _proc_stat()
    if not any(fields):
        return 0.0
    return _CPUS * wall - (fields[3] + fields[4]) / _TICK


@dataclass(frozen=True)
class CpuSnapshot:
    """Counters read at one instant; the difference of two is a :class:`Load`."""

    wall: float
    own_cpu: float
    own_wait: float
    machine_cpu: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        wall = time.perf_counter()
        return cls(wall, time.process_time(), _own_wait_s(), _machine_cpu_s(wall))


@dataclass(frozen=True)
class Load:
    """What the CPUs did during an interval: its wall seconds, the seconds our threads waited for a CPU, and
    the CPU seconds other processes used."""

    seconds: float
    wait_s: float
    foreign_s: float

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot) -> Load:
        own = after.own_cpu - before.own_cpu
        foreign = (after.machine_cpu - before.machine_cpu) - own
        return cls(after.wall - before.wall, max(0.0, after.own_wait - before.own_wait), max(0.0, foreign))

    @property
    def lost_share(self) -> float:
        """Share of the interval this process lost to other processes: min(our CPU wait, their CPU time)."""
        return min(self.wait_s, self.foreign_s) / self.seconds if self.seconds > 0 else 0.0

    @property
    def others_share(self) -> float:
        """Share of all CPUs that other processes used."""
        return self.foreign_s / (self.seconds * _CPUS) if self.seconds > 0 else 0.0

    def clean(self, max_lost_share: float = MAX_LOST_SHARE) -> bool:
        """The noise rule: at most ``max_lost_share`` of the interval lost to other processes."""
        return self.lost_share <= max_lost_share


@dataclass(frozen=True)
class Run:
    """One timed call: its wall seconds (``perf_counter`` around the call only), the CPU load around it, and
    what the call returned (keep it small: every round's values are kept)."""

    seconds: float
    load: Load
    value: Any = None


def measure(fn: Callable[[], Any]) -> Run:
    """Run ``fn`` once, timed, with the CPU load during it."""
    before = CpuSnapshot.now()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    return Run(seconds, Load.between(before, CpuSnapshot.now()), value)


def wait_quiet(max_wait_s: float, threshold: float = QUIET_SHARE) -> float:
    """Wait (at most ``max_wait_s``) for a one-second window in which other processes use under ``threshold``
    of the CPUs. Returns the seconds waited (a line on stderr if it was more than a moment)."""
    if max_wait_s <= 0:
        return 0.0
    start = time.perf_counter()
    while True:
        before = CpuSnapshot.now()
        time.sleep(1.0)
        share = Load.between(before, CpuSnapshot.now()).others_share
        waited = time.perf_counter() - start
        if share < threshold or waited >= max_wait_s:
            if waited > 1.5:
                print(f"waited {waited:.0f} s for a quiet machine (others now use {share:.0%})", file=sys.stderr)
            return waited


# ------------------------------------------------------------------------------------------------- rounds


@dataclass(frozen=True)
class Variant:
    """A named thing to time. ``run`` is the timed call; ``settle``, if given, runs untimed just before it."""

    name: str
    run: Callable[[], Any]
    settle: Callable[[], Any] | None = None


Round = dict[str, Run]  # variant name -> its run in that round


def run_round(variants: Sequence[Variant], index: int) -> Round:
    """Every variant once, starting at variant ``index`` mod n."""
    k = index % len(variants)
    result: Round = {}
    for variant in [*variants[k:], *variants[:k]]:
        if variant.settle is not None:
            variant.settle()
        result[variant.name] = measure(variant.run)
    return result


def round_clean(one: Round, max_lost_share: float = MAX_LOST_SHARE) -> bool:
    """A round counts only if none of its runs lost more than ``max_lost_share`` of its time."""
    return all(run.load.clean(max_lost_share) for run in one.values())


def enough_clean(clean: int, requested: int) -> bool:
    """Whether ``clean`` clean rounds (or calls) suffice for statistics on them alone."""
    return clean >= min(MIN_CLEAN, requested)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation (numpy's default)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Summary:
    """Statistics of one variant's samples (seconds, or whatever unit the samples have)."""

    n: int
    median: float
    p90: float
    min: float
    max: float
    mean: float
    ratio: float | None = None  # median over rounds of sample / baseline's sample in the same round
    ratio_of_medians: float | None = None

    @classmethod
    def of(cls, samples: Sequence[float], baseline: Sequence[float] | None = None) -> Summary:
        """``baseline``, if given, holds the baseline's samples from the same rounds, in the same order."""
        if not samples:
            raise ValueError("no samples to summarize")
        ratio = ratio_of_medians = None
        if baseline is not None:
            if len(baseline) != len(samples):
                raise ValueError("a paired ratio needs one baseline sample per sample")
            ratio = statistics.median(s / b for s, b in zip(samples, baseline, strict=True))
            ratio_of_medians = statistics.median(samples) / statistics.median(baseline)
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            p90=quantile(samples, 0.9),
            min=min(samples),
            max=max(samples),
            mean=statistics.fmean(samples),
            ratio=ratio,
            ratio_of_medians=ratio_of_medians,
        )

    def ms(self) -> dict[str, float]:
        """The statistics of second samples as milliseconds, keyed ``median_ms`` etc."""
        keys = ("median", "p90", "min", "max", "mean")
        return {f"{k}_ms": getattr(self, k) * 1e3 for k in keys}


@dataclass(frozen=True)
class Timing:
    """The outcome of :func:`alternate`: every timed round, which ones were clean, and how the machine was."""

    names: tuple[str, ...]
    rounds: list[Round]
    clean: list[bool]
    requested: int
    warmup: int
    max_lost_share: float
    waited_s: float
    others_share: float  # share of all CPUs that other processes used while timing
    steal_share: float  # share of all CPUs the hypervisor took while timing

    @property
    def clean_count(self) -> int:
        return sum(self.clean)

    @property
    def contended(self) -> bool:
        """Too few clean rounds: the statistics use every round."""
        return not enough_clean(self.clean_count, self.requested)

    @property
    def used(self) -> list[Round]:
        """The rounds the statistics come from: the clean ones, or all of them if contended."""
        if self.contended:
            return self.rounds
        return [r for r, ok in zip(self.rounds, self.clean, strict=True) if ok]

    def seconds(self, name: str) -> list[float]:
        return [r[name].seconds for r in self.used]

    def values(self, name: str) -> list[Any]:
        """What ``name``'s calls returned, in the used rounds."""
        return [r[name].value for r in self.used]

    def summary(self, name: str, baseline: str | None = None) -> Summary:
        return Summary.of(self.seconds(name), self.seconds(baseline) if baseline else None)

    def verdict(self) -> str:
        """One line: rounds used and run, and what the other processes did meanwhile."""
        used = (
            f"only {self.clean_count} clean of {len(self.rounds)} rounds: ALL used, numbers disturbed by "
            "other processes"
            if self.contended
            else f"{self.clean_count} clean of {len(self.rounds)} rounds used"
        )
        waited = f"; waited {self.waited_s:.0f} s for a quiet machine first" if self.waited_s >= 1.5 else ""
        return (
            f"{used} (a round counts if no run in it lost over {self.max_lost_share:.0%} of its time to other "
            f"processes); while timing, other processes used {self.others_share:.1%} of the CPUs "
            f"(steal {self.steal_share:.1%}){waited}"
        )

    def report(self) -> dict[str, Any]:
        """The bookkeeping as a JSON-ready dict (no samples)."""
        return {
            "rounds": len(self.used),
            "rounds_run": len(self.rounds),
            "rounds_clean": self.clean_count,
            "contended": self.contended,
            "warmup": self.warmup,
            "max_lost_share": self.max_lost_share,
            "waited_for_quiet_s": self.waited_s,
            "cpu_share_during_timing": {"other_processes": self.others_share, "steal": self.steal_share},
        }


def alternate(
    variants: Sequence[Variant],
    rounds: int,
    *,
    warmup: int = 3,
    budget_s: float | None = None,
    max_lost_share: float = MAX_LOST_SHARE,
    quiet_wait_s: float = 0.0,
    max_rounds: int | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> Timing:
    """Time ``variants`` in alternated rounds until ``rounds`` clean ones (see the module's docstring).

    ``max_rounds`` (default ``MAX_ROUNDS_FACTOR * rounds``) caps the rounds run; ``progress(run, clean,
    rounds)`` is called after each timed round."""
    names = tuple(v.name for v in variants)
    if not names or len(set(names)) != len(names) or rounds < 1:
        raise ValueError(f"need distinct variant names and rounds >= 1, got {names} and {rounds}")
    last = 0.0
    for i in range(warmup):
        start = time.perf_counter()
        run_round(variants, i)
        last = time.perf_counter() - start
    timed: list[Round] = []
    clean: list[bool] = []
    if budget_s is not None and warmup == 0:  # no warm-up to estimate from: the first timed round
        start = time.perf_counter()
        timed.append(run_round(variants, 0))
        last = time.perf_counter() - start
        clean.append(round_clean(timed[-1], max_lost_share))
    if budget_s is not None:
        affordable = int(budget_s / max(last, 1e-9))
        rounds = max(min(MIN_CLEAN, rounds), min(rounds, affordable))
    cap = max_rounds if max_rounds is not None else MAX_ROUNDS_FACTOR * rounds
    waited = wait_quiet(quiet_wait_s)
    before, stat_before = CpuSnapshot.now(), _proc_stat()
    while sum(clean) < rounds and len(timed) < cap:
        timed.append(run_round(variants, len(timed)))
        clean.append(round_clean(timed[-1], max_lost_share))
        if progress is not None:
            progress(len(timed), sum(clean), rounds)
    load, stat_after = Load.between(before, CpuSnapshot.now()), _proc_stat()
    steal = (stat_after[7] - stat_before[7]) / _TICK / (load.seconds * _CPUS) if load.seconds > 0 else 0.0
    return Timing(names, timed, clean, rounds, warmup, max_lost_share, waited, load.others_share, steal)


# ------------------------------------------------------------------------------------------------- tables


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table. ``align`` has one letter per column, ``l`` or ``r`` (default: all left)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align '{align}' does not match {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row {row!r} does not match {len(header)} columns")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def spread(values: Sequence[float], fmt: str = ".1f") -> str:
    """``median (min-max)``, or just the value when there is one."""
    med = format(statistics.median(values), fmt)
    return med if len(values) == 1 else f"{med} ({format(min(values), '.0f')}-{format(max(values), '.0f')})"
