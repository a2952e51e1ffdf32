"""Model files on inference engines, timed the one way of ``tools/``: compile each model once (:class:`Model`:
OpenVINO in the CPU plugin's default precision, bf16 where the CPU has it, or forced to f32; or ONNX Runtime),
then :func:`time_models`: warm up, alternate the models round by round (:func:`tools.harness.alternate`: noisy
rounds dropped), medians and paired ratios to a baseline model. :func:`peak_rss` measures the peak resident
memory of compile + one inference in a fresh process.

Imports numpy and openvino only (onnxruntime when a model runs on it): the peer's venv (``tools/peer.py``, an
older OpenVINO, no torch, no ovxai) runs this file too, and runs it as a script for the memory child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

if __package__ in (None, ""):  # run as a script: the memory child
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.harness import Timing, Variant, alternate

ENGINES = ("openvino", "onnxruntime")
PRECISIONS = ("default", "f32")  # OpenVINO's: what the plugin picks (what users get), or f32 forced
RUN_S = 0.05  # with ``repeat_s``, a timed run repeats a small model's call for about this long


def compile_openvino(
    core: ov.Core, path: Path, device: str = "CPU", precision: str = "default", profile: bool = False
) -> ov.CompiledModel:
    """``path`` compiled with ``PERFORMANCE_HINT=LATENCY`` (one request, all cores on it), in the plugin's default
    precision or f32; ``profile`` turns the per-node counters on."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}': use one of {', '.join(PRECISIONS)}")
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if profile:
        config["PERF_COUNT"] = "YES"
    return core.compile_model(os.fspath(path), device, config)


def used_precision(compiled: ov.CompiledModel) -> str:
    """The inference precision the plugin actually runs (``bf16``, ``f32`` ...)."""
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
    except RuntimeError:  # a device without the property
        return "n/a"


class Model:
    """One model file compiled for one engine. ``infer(x)`` is the timed call (nothing copied out);
    ``outputs(x)`` returns every output by name; ``precision`` is the one the engine runs.

    ONNX Runtime's idle workers spin for a while after each call, which would steal the CPU from the next
    model of an alternated round: they sleep here instead."""

    def __init__(
        self, path: Path, engine: str = "openvino", precision: str = "default", device: str = "CPU",
        core: ov.Core | None = None,
    ) -> None:  # fmt: skip
        self.path, self.engine = Path(path), engine
        if engine == "openvino":
            self.compiled = compile_openvino(core or ov.Core(), self.path, device, precision)
            self.request = self.compiled.create_infer_request()
            self.precision = used_precision(self.compiled)
        elif engine == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.precision = "f32"
        else:
            raise ValueError(f"engine '{engine}': use one of {', '.join(ENGINES)}")

    def infer(self, x: np.ndarray) -> None:
        if self.engine == "openvino":
            self.request.infer({0: x})
        else:
            self.session.run(None, {self.input: x})

    def outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (an unnamed one, as ``ov.convert_model`` leaves them: ``output<i>``)."""
        if self.engine == "openvino":
            result = self.compiled(x)
            return {
                next(iter(sorted(out.get_names())), f"output{i}"): np.asarray(result[out])
                for i, out in enumerate(self.compiled.outputs)
            }
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, {self.input: x}), strict=True))


def compile_models(
    paths: Mapping[str, Path], engine: str = "openvino", precision: str = "default", device: str = "CPU"
) -> dict[str, Model]:
    """Every model of ``paths`` compiled the same way (one OpenVINO core)."""
    core = ov.Core() if engine == "openvino" else None
    return {name: Model(path, engine, precision, device, core) for name, path in paths.items()}


@dataclass
class Repeated:
    """``call`` repeated ``count`` times, timed as one run: one 4 ms call of a small model is mostly jitter."""

    call: Callable[[], Any]
    count: int = 1

    @classmethod
    def lasting(cls, call: Callable[[], Any], seconds: float = RUN_S) -> Repeated:
        call()
        start = time.perf_counter()
        call()
        return cls(call, max(1, round(seconds / max(time.perf_counter() - start, 1e-9))))

    def __call__(self) -> None:
        for _ in range(self.count):
            self.call()


def time_models(
    models: Mapping[str, Model], x: np.ndarray, rounds: int, *, baseline: str | None = "plain",
    repeat_s: float | None = None, **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Time ``models`` on ``x`` in alternated rounds (``options`` go to :func:`tools.harness.alternate`: warmup,
    budget_s, max_lost_share, quiet_wait_s, max_rounds ...). With ``repeat_s`` each timed run repeats a model's
    call for about that long; times and ratios are per call either way.

    Returns a JSON-ready report: the batch, the harness's bookkeeping (rounds used, run, clean; the verdict)
    and per model its statistics in ms, ``ratio`` (median over rounds of model / ``baseline`` in the same
    round), ``ratio_of_medians``, the precision the engine used, and every used sample."""
    counts: dict[str, int] = {}
    variants = []
    for name, model in models.items():
        call: Callable[[], Any] = partial(model.infer, x)
        if repeat_s:
            call = Repeated.lasting(call, repeat_s)
        counts[name] = call.count if isinstance(call, Repeated) else 1
        variants.append(Variant(name, call))
    timing = alternate(variants, rounds, **options)
    return report(timing, models, int(x.shape[0]), baseline, counts)


def report(
    timing: Timing, models: Mapping[str, Model], batch: int, baseline: str | None, counts: Mapping[str, int]
) -> dict[str, Any]:
    """:func:`time_models`' report of ``timing`` (``counts``: calls per timed run)."""
    result: dict[str, Any] = {"batch": batch, **timing.report(), "verdict": timing.verdict(), "variants": {}}
    for name, model in models.items():
        base = baseline if baseline in models and baseline != name else None
        summary = timing.summary(name, base)
        per_call = counts[name]
        stats: dict[str, Any] = {k: v / per_call for k, v in summary.ms().items()}
        stats["ratio"] = 1.0 if name == baseline else None
        if base is not None and summary.ratio is not None and summary.ratio_of_medians is not None:
            stats["ratio"] = summary.ratio * counts[base] / per_call
            stats["ratio_of_medians"] = summary.ratio_of_medians * counts[base] / per_call
        stats |= {"engine": model.engine, "precision": model.precision, "calls_per_run": per_call}
        stats["samples_ms"] = [round(s * 1e3 / per_call, 4) for s in timing.seconds(name)]
        stats["lost_share"] = [round(r[name].load.lost_share, 4) for r in timing.used]
        result["variants"][name] = stats
    return result


# ------------------------------------------------------------------------------------------------- memory


def peak_rss(
    xml: Path, batch: int = 1, device: str = "CPU", precision: str = "default", python: str = sys.executable
) -> dict[str, float]:
    """Peak RSS (MiB) of compiling ``xml`` and running one inference, in a fresh ``python`` process (any venv
    with numpy and openvino: the peer's too); also the baseline before compiling and the difference."""
    cmd = [python, str(Path(__file__).resolve()), os.fspath(xml), "--batch", str(batch), "--device", device]
    cmd += ["--precision", precision]
    # Linux carries ru_maxrss over execve, so a child exec'd straight from this (large) process would start at
    # our peak: let a small shell fork it (the `; exit` stops the shell from exec'ing it).
    shell = ["/bin/sh", "-c", '"$0" "$@"; exit $?']
    out = subprocess.run(shell + cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _rss_child(argv: Sequence[str] | None = None) -> None:
    """The memory child: peak RSS before and after compile + one inference, as one JSON line."""
    parser = argparse.ArgumentParser(description="peak RSS of compile + one inference (run by peak_rss)")
    parser.add_argument("xml", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="default")
    args = parser.parse_args(argv)
    core = ov.Core()
    core.get_versions(args.device)  # load the device plugin before the baseline
    shape = core.read_model(os.fspath(args.xml)).inputs[0].get_partial_shape()
    if any(d.is_dynamic for d in list(shape)[1:]):
        raise SystemExit(f"{args.xml}: input {shape} has a dynamic size; the memory child needs a fixed one")
    size = tuple(d.get_length() for d in list(shape)[1:])
    x = np.random.default_rng(0).standard_normal((args.batch, *size), dtype=np.float32)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = compile_openvino(core, args.xml, args.device, args.precision)
    compiled.create_infer_request().infer({0: x})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = Path("/proc/self/status")
    hwm = next((int(ln.split()[1]) for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")), 0)
    found = {"baseline_mib": baseline / 1024, "peak_mib": peak / 1024, "delta_mib": (peak - baseline) / 1024}
    print(json.dumps({**found, "vmhwm_mib": hwm / 1024}))


if __name__ == "__main__":
    _rss_child()
