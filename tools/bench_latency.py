"""Latency, size and memory cost of the explanatory hook on a ResNet-50-shaped classifier (OpenVINO CPU).

What it measures, for each batch size in ``--batches``:

* three OpenVINO IR models built from one random-weight ResNet-50 (``models.architectures``):
  ``plain`` (the classifier as is), ``fast`` (ovxai hook at ``layer4``, exact pooled fast path) and
  ``general`` (same hook, ``HookOptions(path="mosaic")``: the full (B*N, C, H, W) mosaic);
* synchronous latency with one reused InferRequest per model, ``time.perf_counter`` around
  ``request.infer``, timed by ``tools/harness.py``: runs *alternated* (each round runs every model once,
  in a rotating order) so that thermal or frequency drift hits every variant alike; median, p90 and the
  paired ratio to ``plain`` (median over rounds of model / plain in the same round). The machine may be
  shared (2 cores, other people's test runs): a round counts only if no run in it lost more than
  ``--max-wait-share`` of its time to other processes, and rounds are repeated until ``--rounds`` clean
  ones; the output says how many were run;
* the IR size on disk (xml + bin) and the constants the patch added (the patched model's Constant
  ops that the plain model does not have, matched by type, shape and content);
* the peak RSS (``ru_maxrss``) of "compile + one inference", each model in its own child process;
* with ``--profile`` (by default when the fast path costs over 5 %): per-node runtime counters of the
  patched model against the plain one, the nodes the patch added and the shared nodes it slowed;
* with ``--competitor-python``: the same for the ``openvino-xai`` package's Recipro-CAM, which lives
  in a separate venv because it pins an older OpenVINO (see ``tools/bench_openvino_xai.py``).

The inference precision is what the CPU plugin picks by default (``--precision default``, what users
get; bf16 on CPUs with native bf16) or forced to f32 (``--precision f32``); the table says which one
the plugin actually used.

Run from the repository root::

    .venv/bin/python tools/bench_latency.py                        # batches 1,8, 30 rounds
    .venv/bin/python tools/bench_latency.py --precision f32 --json bench.json
    .venv/bin/python tools/bench_latency.py --competitor-python /tmp/oxai-venv/bin/python

This file imports only the standard library, numpy, openvino and ``harness.py`` at module level, so that
``bench_openvino_xai.py`` can reuse its helpers from the competitor's venv (no torch, no ovxai there).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
from harness import MAX_LOST_SHARE, MIN_CLEAN, QUIET_SHARE, Variant, alternate, markdown_table

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = Path(__file__).resolve()
VARIANTS = ("plain", "fast", "general")
LAYER = "layer4"
IMAGE = (3, 224, 224)


# ----------------------------------------------------------------------------------------------- models


def build_models(workdir: Path) -> tuple[dict[str, Path], str]:
    """Export the plain ONNX, the plain IR and the two patched IRs into ``workdir``.

    Returns the paths and the ONNX tensor name of the hooked feature map (the output of ``layer4``)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from models import architectures as arch
    from ovxai import HookOptions, export

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"onnx": workdir / "plain.onnx", "plain": workdir / "plain.xml"}
    net = arch.randomize(arch.resnet50(num_classes=1000))
    torch.onnx.export(
        net,
        (torch.rand(1, *IMAGE),),
        str(paths["onnx"]),
        dynamo=False,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    ov.save_model(ov.convert_model(str(paths["onnx"])), str(paths["plain"]), compress_to_fp16=False)
    # FP32 weights like the plain IR, so that sizes and constants compare like for like
    extra: dict[str, Any] = {"fp16": False} if "fp16" in inspect.signature(export).parameters else {}
    target = ""
    for name, fast in (("fast", True), ("general", False)):
        options = HookOptions(path="auto" if fast else "mosaic")
        result = export(paths["onnx"], workdir / f"{name}.xml", layer=LAYER, options=options, **extra)
        if result.fast_path != fast:
            raise SystemExit(f"export for '{name}' used fast_path={result.fast_path}, expected {fast}")
        paths[name] = Path(result.files[0])
        target = str(result.target.tensor)
    return paths, target


def ir_size(xml: Path) -> int:
    """Bytes on disk of an IR: the .xml plus its .bin."""
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


ConstKey = tuple[str, tuple[int, ...], int, str]  # element type, shape, bytes, sha1 of the content


def _constants(model: ov.Model) -> Counter[ConstKey]:
    found: Counter[ConstKey] = Counter()
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            data = np.ascontiguousarray(op.get_data())
            shape = tuple(int(d) for d in op.get_output_shape(0))
            digest = hashlib.sha1(data.tobytes()).hexdigest()
            found[(op.get_element_type().get_type_name(), shape, int(op.get_byte_size()), digest)] += 1
    return found


def added_constants(plain_xml: Path, patched_xml: Path) -> dict[str, Any]:
    """Constants in the patched model that the plain one lacks (by type, shape and content)."""
    core = ov.Core()
    added = _constants(core.read_model(str(patched_xml))) - _constants(core.read_model(str(plain_xml)))
    sizes = sorted(((nbytes, etype, list(shape)) for (etype, shape, nbytes, _), n in added.items() for _ in range(n)),
                   reverse=True)  # fmt: skip
    largest = sizes[0] if sizes else (0, "", [])
    return {
        "count": len(sizes),
        "total_bytes": sum(s[0] for s in sizes),
        "largest_bytes": largest[0],
        "largest_type": largest[1],
        "largest_shape": largest[2],
    }


def added_op_types(plain_xml: Path, patched_xml: Path) -> dict[str, int]:
    """Op types the patch added, by count (the saliency branch, including its copy of the tail)."""
    core = ov.Core()

    def count(xml: Path) -> Counter[str]:
        return Counter(op.get_type_name() for op in core.read_model(str(xml)).get_ordered_ops())

    return dict((count(patched_xml) - count(plain_xml)).most_common())


def static_info(models: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Per model: IR size, and for the patched ones what they add to ``models["plain"]``."""
    static: dict[str, dict[str, Any]] = {}
    for name, xml in models.items():
        static[name] = {"ir_bytes": ir_size(xml), "path": str(xml)}
        if name != "plain":
            static[name]["added_constants"] = added_constants(models["plain"], xml)
            static[name]["added_op_types"] = added_op_types(models["plain"], xml)
    return static


# ------------------------------------------------------------------------------------------------ timing


def compile_model(core: ov.Core, xml: Path, device: str, precision: str, profile: bool = False) -> ov.CompiledModel:
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if profile:
        config["PERF_COUNT"] = "YES"
    return core.compile_model(str(xml), device, config)


def used_precision(compiled: ov.CompiledModel) -> str:
    try:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
    except RuntimeError:  # a device without the property
        return "n/a"


def batch_input(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *IMAGE), dtype=np.float32)


def infer_once(request: ov.InferRequest, x: np.ndarray) -> None:
    request.infer({0: x})


def bench_batch(core: ov.Core, models: dict[str, Path], batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Compile every model and time them in alternated rounds (``harness.alternate``): medians, p90 and the
    paired ratio to ``plain`` from the clean rounds (all rounds, flagged ``contended``, if too few were clean)."""
    compiled = {name: compile_model(core, xml, args.device, args.precision) for name, xml in models.items()}
    requests = {name: c.create_infer_request() for name, c in compiled.items()}
    x = batch_input(batch)
    variants = [Variant(name, partial(infer_once, request, x)) for name, request in requests.items()]
    timing = alternate(
        variants,
        args.rounds,
        warmup=args.warmup,
        budget_s=args.budget_s,
        max_lost_share=args.max_wait_share,
        quiet_wait_s=args.wait_quiet,
    )
    for name, request in requests.items():  # a patched model must explain every image of the batch
        if name != "plain" and request.get_tensor("saliency_map").shape[0] != batch:
            raise SystemExit(f"{name}: saliency_map {request.get_tensor('saliency_map').shape} for batch {batch}")
    result: dict[str, Any] = {**timing.report(), "verdict": timing.verdict(), "variants": {}}
    for name in models:
        summary = timing.summary(name, "plain")
        stats: dict[str, Any] = summary.ms()
        stats["ratio_to_plain"] = summary.ratio
        stats["ratio_of_medians"] = summary.ratio_of_medians
        stats["precision"] = used_precision(compiled[name])
        stats["samples_ms"] = [round(s * 1e3, 4) for s in timing.seconds(name)]
        stats["lost_share"] = [round(r[name].load.lost_share, 4) for r in timing.used]
        result["variants"][name] = stats
    return result


# ------------------------------------------------------------------------------------------- profiling


NodeTimes = dict[str, tuple[float, str, str]]  # node -> (ms, type, exec type)


def infer_profiled(request: ov.InferRequest, x: np.ndarray) -> NodeTimes:
    request.infer({0: x})
    return {
        info.node_name: (info.real_time.total_seconds() * 1e3, info.node_type, info.exec_type)
        for info in request.get_profiling_info()
    }


def profile_costs(
    core: ov.Core, plain: Path, patched: Path, batch: int, args: argparse.Namespace, runs: int = 30, top: int = 8
) -> dict[str, Any]:
    """Per-node runtime counters (PERF_COUNT, median over ``runs`` clean alternated rounds) of ``plain`` and
    ``patched``.

    Nodes of the compiled patched model that the compiled plain one lacks count as added (the branch and
    the reorders it forces); nodes in both are compared too, since the branch can change how the plugin
    runs the backbone (layouts, precisions, fusions)."""
    x = batch_input(batch)
    variants = []
    for k, xml in (("plain", plain), ("patched", patched)):
        request = compile_model(core, xml, args.device, args.precision, profile=True).create_infer_request()
        variants.append(Variant(k, partial(infer_profiled, request, x)))
    timing = alternate(variants, runs, warmup=3, max_lost_share=args.max_wait_share, quiet_wait_s=args.wait_quiet)
    samples: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in timing.names}
    kinds: dict[str, dict[str, tuple[str, str]]] = {k: {} for k in timing.names}
    for k in timing.names:
        for nodes in timing.values(k):
            for node, (ms, node_type, exec_type) in nodes.items():
                samples[k][node].append(ms)
                kinds[k][node] = (node_type, exec_type)
    ms = {k: {n: statistics.median(v) for n, v in per.items()} for k, per in samples.items()}
    plain_ms, patched_ms = ms["plain"], ms["patched"]
    added = {n: t for n, t in patched_ms.items() if n not in plain_ms}
    by_type: dict[str, float] = defaultdict(float)
    for n, t in added.items():
        by_type[kinds["patched"][n][0]] += t
    common = sorted(((patched_ms[n] - plain_ms[n], n) for n in patched_ms if n in plain_ms), reverse=True)
    return {
        "batch": batch,
        "runs": len(timing.used),
        "runs_tried": len(timing.rounds),
        "contended": timing.contended,
        "plain_total_ms": sum(plain_ms.values()),
        "patched_total_ms": sum(patched_ms.values()),
        "added_total_ms": sum(added.values()),
        "added_nodes": len(added),
        "common_delta_ms": sum(d for d, _ in common),
        "top_added": [
            {"node": n, "type": kinds["patched"][n][0], "exec": kinds["patched"][n][1], "ms": t}
            for n, t in sorted(added.items(), key=lambda kv: kv[1], reverse=True)[:top]
        ],
        "added_by_type_ms": dict(sorted(by_type.items(), key=lambda kv: kv[1], reverse=True)),
        "top_slower_common": [
            {
                "node": n,
                "type": kinds["patched"][n][0],
                "exec": f"{kinds['plain'][n][1]} -> {kinds['patched'][n][1]}",
                "plain_ms": plain_ms[n],
                "patched_ms": patched_ms[n],
            }
            for d, n in common[:5]
        ],
    }


# ------------------------------------------------------------------------------------------------- memory


def rss_child(xml: str, batch: int, device: str, precision: str) -> None:
    """Child-process body: peak RSS before and after compile + one inference, as one JSON line."""
    core = ov.Core()
    core.get_versions(device)  # load the device plugin before the baseline
    x = batch_input(batch)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    compiled = compile_model(core, Path(xml), device, precision)
    compiled.create_infer_request().infer({0: x})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status = Path("/proc/self/status")
    hwm = next((int(ln.split()[1]) for ln in status.read_text().splitlines() if ln.startswith("VmHWM:")), 0)
    report = {"baseline_mib": baseline / 1024, "peak_mib": peak / 1024, "delta_mib": (peak - baseline) / 1024}
    print(json.dumps({**report, "vmhwm_mib": hwm / 1024}))


def peak_rss(python: str, xml: Path, batch: int, device: str, precision: str) -> dict[str, float]:
    """Run :func:`rss_child` in a fresh ``python`` process (ru_maxrss is in KiB on Linux; MiB returned)."""
    cmd = [python, str(THIS_FILE), "--rss-child", str(xml), "--batch", str(batch), "--device", device]
    cmd += ["--precision", precision]
    # Linux carries ru_maxrss over execve, so a child exec'd straight from this (large) process would
    # start at our peak: let a small shell fork it (the `; exit` stops the shell from exec'ing it).
    shell = ["/bin/sh", "-c", '"$0" "$@"; exit $?']
    out = subprocess.run(shell + cmd, check=True, capture_output=True, text=True).stdout
    report: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return report


# -------------------------------------------------------------------------------------------- competitor


def run_competitor(
    python: str, paths: dict[str, Path], target: str, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Run bench_openvino_xai.py in the competitor's venv; its own process, its own OpenVINO."""
    script = THIS_FILE.with_name("bench_openvino_xai.py")
    cmd = [python, str(script), "--plain", str(paths["plain"]), "--target", target, "--workdir", str(workdir)]
    cmd += ["--extra", f"fast={paths['fast']}", "--extra", f"general={paths['general']}"]
    cmd += ["--rounds", str(args.rounds), "--warmup", str(args.warmup), "--budget-s", str(args.budget_s)]
    cmd += ["--wait-quiet", str(args.wait_quiet), "--max-wait-share", str(args.max_wait_share)]
    cmd += ["--device", args.device, "--precision", args.precision] + (["--no-rss"] if args.no_rss else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


# ---------------------------------------------------------------------------------------------- printing


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


def human_bytes(nbytes: int) -> str:
    return f"{nbytes} B" if nbytes < 10_000 else mib(nbytes)


def latency_table(batches: dict[str, Any], static: dict[str, dict[str, Any]]) -> str:
    header = ["batch", "model", "precision", "rounds used/run", "median ms", "p90 ms", "ratio to plain",
              "IR size (xml+bin)", "largest added constant", "added constants (count / bytes)"]  # fmt: skip
    rows = []
    for batch, res in batches.items():
        for name, s in res["variants"].items():
            info = static[name]
            added = info.get("added_constants")
            largest = (
                f"{human_bytes(added['largest_bytes'])} {added['largest_type']}{added['largest_shape']}"
                if added
                else "-"
            )
            counts = f"{added['count']} / {human_bytes(added['total_bytes'])}" if added else "-"
            timing = [f"{res['rounds']}/{res['rounds_run']}", f"{s['median_ms']:.2f}", f"{s['p90_ms']:.2f}"]
            ratio = f"{s['ratio_to_plain']:.3f}"
            rows.append([batch, name, s["precision"], *timing, ratio, mib(info["ir_bytes"]), largest, counts])
    lines = [markdown_table(header, rows, "rllrrrrrlr")]
    lines += [f"\nbatch {batch}: {res['verdict']}" for batch, res in batches.items()]
    return "\n".join(lines)


def rss_table(rss: dict[str, dict[str, dict[str, float]]]) -> str:
    header = ["batch", "model", "peak RSS MiB (ru_maxrss)", "before compile MiB", "compile+inference adds MiB",
              "VmHWM MiB"]  # fmt: skip
    keys = ("peak_mib", "baseline_mib", "delta_mib", "vmhwm_mib")
    rows = [
        [batch, name, *(f"{r[k]:.1f}" for k in keys)]
        for batch, per_model in rss.items()
        for name, r in per_model.items()
    ]
    return markdown_table(header, rows, "rlrrrr")


def profile_text(profiles: list[dict[str, Any]]) -> str:
    lines = []
    for p in profiles:
        used = "all" if p["contended"] else "clean"
        lines.append(
            f"\n{p['variant']} @ batch {p['batch']} (PERF_COUNT, median of {p['runs']}/{p['runs_tried']} {used} "
            "alternated runs): sum of nodes "
            f"{p['patched_total_ms']:.2f} ms vs plain {p['plain_total_ms']:.2f} ms; {p['added_nodes']} added nodes "
            f"cost {p['added_total_ms']:.3f} ms, nodes in both differ by {p['common_delta_ms']:+.3f} ms"
        )
        added = [[t["node"][:80], t["type"], t["exec"], f"{t['ms']:.3f}"] for t in p["top_added"]]
        lines.append(markdown_table(["added node", "type", "exec", "ms"], added, "lllr"))
        by_type = ", ".join(f"{k} {v:.3f}" for k, v in list(p["added_by_type_ms"].items())[:8])
        lines.append(f"\nadded ms by type: {by_type}\n")
        slowed = [[t["node"][:80], t["type"], t["exec"], f"{t['plain_ms']:.3f}", f"{t['patched_ms']:.3f}"]
                  for t in p["top_slower_common"]]  # fmt: skip
        header = ["node in both, most slowed", "type", "exec plain -> patched", "plain ms", "patched ms"]
        lines.append(markdown_table(header, slowed, "lllrr"))
    return "\n".join(lines)


def competitor_text(comp: dict[str, Any]) -> str:
    if "error" in comp:
        return f"competitor run failed: {comp['error']}"
    head = (
        f"openvino-xai {comp['openvino_xai']} on OpenVINO {comp['openvino']} (its own venv, a SEPARATE process; "
        f"the four models below are alternated within that process, batch 1 only; target '{comp['target']}'; "
        f"its saliency map: {comp['saliency_map']})"
    )
    static = {name: {"ir_bytes": v["ir_bytes"], "added_constants": v.get("added_constants")} for name, v in
              comp["models"].items()}  # fmt: skip
    table = latency_table({"1": comp["latency"]}, static)
    rss = rss_table({"1": comp["rss"]}) if comp.get("rss") else ""
    return "\n\n".join(x for x in (head, table, rss) if x)


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--rounds", type=int, default=30, help="alternated rounds per batch (default 30)")
    p.add_argument(
        "--budget-s",
        type=float,
        default=60.0,
        help=f"cap on the timed seconds per batch: fewer rounds (at least {MIN_CLEAN}) if --rounds would take longer",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed rounds before timing (default 5)")
    p.add_argument(
        "--max-wait-share",
        type=float,
        default=MAX_LOST_SHARE,
        help="a round counts only if no run in it lost more than this share of its time to other processes\n"
        "(min of its threads' CPU wait and the others' CPU time); rounds are repeated (up to 5x) until\n"
        f"--rounds clean ones (default {MAX_LOST_SHARE}, see tools/harness.py)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help=f"before timing a batch, wait up to this many seconds for a second in which other processes use\n"
        f"under {QUIET_SHARE:.0%} of the CPUs (0: off)",
    )
    p.add_argument("--device", default="CPU")
    p.add_argument("--precision", choices=("default", "f32"), default="default", help="default: what the plugin picks")
    p.add_argument("--workdir", type=Path, help="where to write the models (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write every number (and raw samples) here")
    p.add_argument(
        "--profile",
        choices=("auto", "always", "never"),
        default="auto",
        help="per-op counters (PERF_COUNT) of patched vs plain; auto: for 'fast' at each batch where its ratio > 1.05",
    )
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--competitor-python", help="python of a venv with openvino-xai (runs bench_openvino_xai.py)")
    p.add_argument("--rss-child", metavar="XML", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child, args.batch, args.device, args.precision)
        return
    started = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory(prefix="ovxai-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        paths, target = build_models(workdir)
        export_s = time.perf_counter() - t0
        print(f"models written to {workdir} in {export_s:.1f} s", flush=True)
        models = {name: paths[name] for name in VARIANTS}
        static = static_info(models)

        core = ov.Core()
        results: dict[str, Any] = {}
        for batch in batches:
            t0 = time.perf_counter()
            results[str(batch)] = bench_batch(core, models, batch, args)
            print(f"batch {batch}: {time.perf_counter() - t0:.1f} s", flush=True)

        profiles: list[dict[str, Any]] = []
        for batch in batches:
            for name in ("fast", "general"):
                ratio = results[str(batch)]["variants"][name]["ratio_to_plain"]
                wanted = args.profile == "always" or (args.profile == "auto" and name == "fast" and ratio > 1.05)
                if wanted:
                    profiles.append(
                        {"variant": name, **profile_costs(core, models["plain"], models[name], batch, args)}
                    )

        rss: dict[str, dict[str, dict[str, float]]] = {}
        if not args.no_rss:
            for batch in batches:
                rss[str(batch)] = {
                    name: peak_rss(sys.executable, models[name], batch, args.device, args.precision)
                    for name in VARIANTS
                }

        competitor = None
        if args.competitor_python:
            t0 = time.perf_counter()
            competitor = run_competitor(args.competitor_python, paths, target, workdir, args)
            print(f"competitor: {time.perf_counter() - t0:.1f} s", flush=True)

    elapsed = time.perf_counter() - started
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    print(
        f"\n## ovxai hook cost: ResNet-50 (random weights), target {LAYER}, OpenVINO {ov.get_version()}, "
        f"{args.device} ({cpu}), PERFORMANCE_HINT=LATENCY, --precision {args.precision}\n"
    )
    print(latency_table(results, static))
    for name in ("fast", "general"):
        print(f"\n{name}: ops added by the patch: {static[name]['added_op_types']}")
    if profiles:
        print(profile_text(profiles))
    if rss:
        print("\n## peak RSS of compile + one inference (ru_maxrss, one child process per row)\n")
        print(rss_table(rss))
    if competitor is not None:
        print("\n## competitor\n")
        print(competitor_text(competitor))
    print(f"\ntotal wall time {elapsed:.1f} s (model export {export_s:.1f} s)")

    if args.json:
        report = {
            "openvino": ov.get_version(),
            "device": args.device,
            "cpu": cpu,
            "precision_option": args.precision,
            "layer": LAYER,
            "models": static,
            "latency": results,
            "profiles": profiles,
            "rss": rss,
            "competitor": competitor,
            "wall_time_s": elapsed,
            "export_s": export_s,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
