"""Latency, size and memory cost of the explanatory hook on a ResNet-50-shaped classifier (OpenVINO CPU).

What it measures, for each batch size in ``--batches``:

* three OpenVINO IR models built from one random-weight ResNet-50 (``models/zoo.py``'s ``resnet50``):
  ``plain`` (the classifier as is), ``fast`` (ovxai hook at ``layer4``, exact pooled fast path) and
  ``general`` (same hook, ``HookOptions(path="mosaic")``: the full (B*N, C, H, W) mosaic);
* synchronous latency with one reused InferRequest per model, ``time.perf_counter`` around
  ``request.infer``, timed by ``tools/engines.py``: runs *alternated* (each round runs every model once,
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
* with ``--peer``: the same for the ``openvino-xai`` package's Recipro-CAM at the same tensor, beside the three
  models above, in its own venv and OpenVINO (``tools/peer.py``).

The inference precision is what the CPU plugin picks by default (``--precision default``, what users
get; bf16 on CPUs with native bf16) or forced to f32 (``--precision f32``); the table says which one
the plugin actually used.

Run from the repository root::

    .venv/bin/python tools/bench_latency.py                        # batches 1,8, 30 rounds
    .venv/bin/python tools/bench_latency.py --precision f32 --json bench.json
    .venv/bin/python tools/bench_latency.py --peer                 # and openvino-xai (.venv-xai)
    .venv/bin/python tools/bench_latency.py --quick                # batch 1, 3 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import peer
from tools.engines import compile_models, compile_openvino, peak_rss, time_models
from tools.harness import MAX_LOST_SHARE, MIN_CLEAN, QUIET_SHARE, Variant, alternate, markdown_table
from tools.ir_diff import static_info

VARIANTS = ("plain", "fast", "general")
LAYER = "layer4"
IMAGE = (3, 224, 224)


# ----------------------------------------------------------------------------------------------- models


def build_models(workdir: Path) -> tuple[dict[str, Path], str]:
    """Export the plain ONNX, the plain IR and the two patched IRs into ``workdir``, FP32 weights throughout
    (sizes and constants compare like for like).

    Returns the paths and the ONNX tensor name of the hooked feature map (the output of ``layer4``)."""
    from models import routes, zoo
    from ovxai import HookOptions, export

    workdir.mkdir(parents=True, exist_ok=True)
    net, size = zoo.build("resnet50")
    paths = {"onnx": routes.to_onnx(net, workdir / "plain.onnx", size, "legacy")}
    paths["plain"] = routes.onnx_to_ir(paths["onnx"], workdir / "plain.xml", fp16=False)
    target = ""
    for name, fast in (("fast", True), ("general", False)):
        options = HookOptions(path="auto" if fast else "mosaic")
        result = export(paths["onnx"], workdir / f"{name}.xml", layer=LAYER, options=options, fp16=False)
        if result.fast_path != fast:
            raise SystemExit(f"export for '{name}' used fast_path={result.fast_path}, expected {fast}")
        paths[name] = Path(result.files[0])
        target = str(result.target.tensor)
    return paths, target


# ------------------------------------------------------------------------------------------------ timing


def batch_input(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *IMAGE), dtype=np.float32)


def bench_batch(models: dict[str, Path], batch: int, args: argparse.Namespace) -> dict[str, Any]:
    """Compile every model and time them in alternated rounds (``engines.time_models``): medians, p90 and the
    paired ratio to ``plain`` from the clean rounds (all rounds, flagged ``contended``, if too few were clean)."""
    compiled = compile_models(models, "openvino", args.precision, args.device)
    x = batch_input(batch)
    for name, model in compiled.items():  # a patched model must explain every image of the batch
        if name != "plain" and model.outputs(x)["saliency_map"].shape[0] != batch:
            raise SystemExit(f"{name}: saliency_map {model.outputs(x)['saliency_map'].shape} for batch {batch}")
    return time_models(
        compiled, x, args.rounds, warmup=args.warmup, budget_s=args.budget_s, max_lost_share=args.max_wait_share,
        quiet_wait_s=args.wait_quiet,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- profiling


NodeTimes = dict[str, tuple[float, str, str]]  # node -> (ms, type, exec type)


def infer_profiled(request: ov.InferRequest, x: np.ndarray) -> NodeTimes:
    request.infer({0: x})
    return {
        info.node_name: (info.real_time.total_seconds() * 1e3, info.node_type, info.exec_type)
        for info in request.get_profiling_info()
    }


def profile_costs(
    core: ov.Core, plain: Path, patched: Path, batch: int, args: argparse.Namespace, top: int = 8
) -> dict[str, Any]:
    """Per-node runtime counters (PERF_COUNT, median over ``--rounds`` clean alternated rounds) of ``plain`` and
    ``patched``.

    Nodes of the compiled patched model that the compiled plain one lacks count as added (the branch and
    the reorders it forces); nodes in both are compared too, since the branch can change how the plugin
    runs the backbone (layouts, precisions, fusions)."""
    x = batch_input(batch)
    variants = []
    for k, xml in (("plain", plain), ("patched", patched)):
        request = compile_openvino(core, xml, args.device, args.precision, profile=True).create_infer_request()
        variants.append(Variant(k, partial(infer_profiled, request, x)))
    timing = alternate(variants, args.rounds, warmup=min(3, args.warmup), max_lost_share=args.max_wait_share,
                       quiet_wait_s=args.wait_quiet)  # fmt: skip
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
            ratio = f"{s['ratio']:.3f}"
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
        f"under {QUIET_SHARE * 100:.0f}%% of the CPUs (0: off)",
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
    peer.add_argument(p)
    p.add_argument("--quick", action="store_true", help="a smoke run: batch 1, 3 rounds, 1 warm-up, no quiet wait")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.rounds, args.warmup, args.wait_quiet, args.budget_s = "1", 3, 1, 0.0, 10.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
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
            results[str(batch)] = bench_batch(models, batch, args)
            print(f"batch {batch}: {time.perf_counter() - t0:.1f} s", flush=True)

        profiles: list[dict[str, Any]] = []
        for batch in batches:
            for name in ("fast", "general"):
                ratio = results[str(batch)]["variants"][name]["ratio"]
                wanted = args.profile == "always" or (args.profile == "auto" and name == "fast" and ratio > 1.05)
                if wanted:
                    profiles.append(
                        {"variant": name, **profile_costs(core, models["plain"], models[name], batch, args)}
                    )

        rss: dict[str, dict[str, dict[str, float]]] = {}
        if not args.no_rss:
            for batch in batches:
                rss[str(batch)] = {
                    name: peak_rss(models[name], batch, args.device, args.precision) for name in VARIANTS
                }

        peer_report = None
        if args.peer is not None:
            t0 = time.perf_counter()
            request = peer.Request(
                str(paths["plain"]), str(workdir), target=target, extras={k: str(paths[k]) for k in VARIANTS[1:]},
                precisions=[args.precision], rounds=args.rounds, warmup=args.warmup, budget_s=args.budget_s,
                quiet_wait_s=args.wait_quiet, max_lost_share=args.max_wait_share, rss=not args.no_rss,
            )  # fmt: skip
            peer_report = peer.run(request, peer.python(args.peer))
            print(f"openvino-xai: {time.perf_counter() - t0:.1f} s", flush=True)

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
    if peer_report is not None:
        print("\n## openvino-xai (the peer)\n")
        print(peer.table(peer_report))
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
            "peer": peer_report,
            "wall_time_s": elapsed,
            "export_s": export_s,
        }
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
