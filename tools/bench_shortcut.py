"""The exact shortcut past the mosaic (issue 12), measured by hand: plain vs patched latency and memory.

Models without a global pool right after their target map, as torchvision and timm define them (random
weights, tests/zoo.py, 1000 classes), at the targets of the issue's table: SqueezeNet 1.1 at ``features`` (1 x 1 conv
+ ReLU before the pool), AlexNet and VGG-16-BN at ``features`` (flatten + an MLP), a conv-head hybrid
(timm EfficientViT-B0 at its last stage: 1 x 1 conv + BN + act, pool, MLP), and ResNet-50 at ``layer4``
(the classic fast path, which must not get slower), and ResNet-50 at ``layer3`` (layer4's 3 x 3 convolutions
follow: the incremental windows of ovxai/incremental.py). Each exported three ways: plain, patched with the
fast path (the closed-form shortcut, or the windows), patched with the full mosaic (``path="mosaic"``).
The peer at the same target: ``.venv-xai/bin/python tools/bench_openvino_xai.py --plain PLAIN.xml --target TENSOR
--extra windows=PATCHED.xml`` (``--keep DIR`` keeps this script's files).

OpenVINO CPU (plugin default precision and f32, ``PERFORMANCE_HINT=LATENCY``) and ONNX Runtime CPU, batch 1
and 8, alternated rounds (tools/harness.py), medians and paired ratios to plain; peak RSS of compile + one
inference in a fresh process (tools/bench_latency.py's child).

    python -m tools.bench_shortcut [--models squeezenet1_1 vgg16_bn] [--rounds 8] [--out out/bench_shortcut.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]

from bench_latency import compile_model, infer_once, peak_rss  # noqa: E402
from harness import Variant, alternate, markdown_table  # noqa: E402

SIZE = 224
CLASSES = 1000  # ImageNet heads, as deployed: each copy runs the classifier (all of it, with the default softmax)
MODELS: dict[str, tuple[str, str, str]] = {  # name: (library, constructor, target as in issue 12's table)
    "squeezenet1_1": ("torchvision", "squeezenet1_1", "features"),
    "alexnet": ("torchvision", "alexnet", "features"),
    "vgg16_bn": ("torchvision", "vgg16_bn", "features"),
    "efficientvit_b0": ("timm", "efficientvit_b0", "stages.3"),
    "resnet50": ("torchvision", "resnet50", "layer4"),
    "resnet50_layer3": ("torchvision", "resnet50", "layer3"),  # the incremental windows through layer4
}
VARIANTS = ("plain", "shortcut", "mosaic")


def build(name: str, folder: Path) -> dict[str, Path]:
    """Plain ONNX + IR, and both patched variants in both formats."""
    import zoo

    from ovxai import HookOptions, export
    from ovxai.exporter.from_torch import to_onnx

    library, constructor, layer = MODELS[name]
    factory: Callable[..., Any] = zoo.build_torchvision if library == "torchvision" else zoo.build_timm
    net = factory(constructor, SIZE, num_classes=CLASSES)
    paths = {"plain.onnx": folder / f"{name}.onnx", "plain.xml": folder / f"{name}.xml"}
    to_onnx(net, paths["plain.onnx"], SIZE, "legacy")
    ov.save_model(ov.convert_model(str(paths["plain.onnx"])), str(paths["plain.xml"]), compress_to_fp16=False)
    for variant, fast in (("shortcut", True), ("mosaic", False)):
        for suffix in ("onnx", "xml"):
            result = export(paths["plain.onnx"], folder / f"{name}_{variant}.{suffix}", layer=layer,
                            options=HookOptions(path="auto" if fast else "mosaic"), fp16=False)  # fmt: skip
            paths[f"{variant}.{suffix}"] = result.files[0]
        paths[f"{variant}.path"] = Path(result.path)
    return paths


def check(paths: dict[str, Path]) -> dict[str, float]:
    """The shortcut against the mosaic (maps) and the plain model (prediction), ONNX Runtime, batch 2; and the
    weight files' sizes: the shortcut's IR holds its re-laid weight instead of the original, never both."""
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    out = {}
    for variant in VARIANTS:
        session = ort.InferenceSession(str(paths[f"{variant}.onnx"]), providers=["CPUExecutionProvider"])
        out[variant] = dict(
            zip(
                [o.name for o in session.get_outputs()],
                session.run(None, {session.get_inputs()[0].name: x}),
                strict=True,
            )
        )
    logits = next(name for name in out["plain"])
    plain = out["plain"][logits]
    return {
        "max_map_diff_vs_mosaic": float(np.abs(out["shortcut"]["saliency_map"] - out["mosaic"]["saliency_map"]).max()),
        "max_prediction_diff_rel": float(np.abs(out["shortcut"][logits] - plain).max() / np.abs(plain).max()),
        **{f"{v}_bin_mib": paths[f"{v}.xml"].with_suffix(".bin").stat().st_size / 2**20 for v in VARIANTS},
    }


RUN_S = 0.05  # a timed run repeats a call of a small model until about this long: one 4 ms call is jitter


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
        return cls(call, max(1, round(seconds / (time.perf_counter() - start))))

    def __call__(self) -> None:
        for _ in range(self.count):
            self.call()


def time_openvino(paths: dict[str, Path], batch: int, precision: str, rounds: int) -> dict[str, Any]:
    core = ov.Core()
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    variants = []
    for variant in VARIANTS:
        request = compile_model(core, paths[f"{variant}.xml"], "CPU", precision).create_infer_request()
        variants.append(Variant(variant, Repeated.lasting(partial(infer_once, request, x))))
    return _summary(variants, alternate(variants, rounds, warmup=2, max_rounds=2 * rounds))


def time_onnxruntime(paths: dict[str, Path], batch: int, rounds: int) -> dict[str, Any]:
    import onnxruntime as ort

    # Idle ONNX Runtime workers spin for a while after each call; with three sessions alternating on two
    # cores, one session's spinning would steal the next one's CPU.
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    variants = []
    for variant in VARIANTS:
        session = ort.InferenceSession(str(paths[f"{variant}.onnx"]), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        variants.append(Variant(variant, Repeated.lasting(partial(session.run, None, feed))))
    return _summary(variants, alternate(variants, rounds, warmup=2, max_rounds=2 * rounds))


def _summary(variants: list[Variant], timing: Any) -> dict[str, Any]:
    """Medians per call, and each variant's paired ratio to plain per call (its runs repeat a different count)."""
    out: dict[str, Any] = {"rounds": f"{timing.clean_count}/{len(timing.rounds)}", "verdict": timing.verdict()}
    counts = {v.name: v.run.count for v in variants if isinstance(v.run, Repeated)}
    for variant in VARIANTS:
        s = timing.summary(variant, None if variant == "plain" else "plain")
        ratio = None if s.ratio is None else s.ratio * counts["plain"] / counts[variant]
        out[variant] = {"median_ms": s.median * 1e3 / counts[variant], "calls_per_run": counts[variant], "ratio": ratio}
    return out


def pruning(name: str, folder: Path, rounds: int) -> list[tuple[Any, ...]]:
    """Issue 13 part 1: ``--score logits`` maps for every class vs the top 5 only (the copies then run only those
    classes' classifier rows): hook MACs per image (cost.py) and OpenVINO f32 batch 1 latency vs plain."""
    import zoo

    from ovxai import HookOptions, export
    from ovxai.exporter.from_torch import to_onnx
    from ovxai.exporter.pipeline import load_model
    from ovxai.graph.macs import macs
    from ovxai.hook.cost import hook_macs
    from ovxai.hook.tail import plan_tail
    from ovxai.hook.target import pick_prediction, resolve

    library, constructor, layer = MODELS[name]
    factory: Callable[..., Any] = zoo.build_torchvision if library == "torchvision" else zoo.build_timm
    plain = folder / f"{name}.onnx"
    to_onnx(factory(constructor, SIZE, num_classes=CLASSES), plain, SIZE, "legacy")
    graph = load_model(plain).graph
    prediction = pick_prediction(graph, None)
    plan = plan_tail(graph, resolve(graph, prediction, layer).tensor, prediction)
    total = macs(graph, graph.nodes)
    paths = {"plain": folder / f"{name}.xml"}
    ov.save_model(ov.convert_model(str(plain)), str(paths["plain"]), compress_to_fp16=False)
    for variant, explain in (("all", "all"), ("top5", "top5")):
        options = HookOptions(score="logits", explain=explain)
        paths[variant] = export(
            plain, folder / f"{name}_{variant}.xml", layer=layer, options=options, fp16=False
        ).files[0]
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    core = ov.Core()
    variants = []
    for variant, path in paths.items():
        request = compile_model(core, path, "CPU", "f32").create_infer_request()
        variants.append(Variant(variant, partial(infer_once, request, x)))
    timing = alternate(variants, rounds, warmup=2, max_rounds=2 * rounds)
    rows = []
    for variant, selected in (("all", None), ("top5", 5)):
        cost = hook_macs(graph, plan, HookOptions(score="logits"), selected=selected)
        s = timing.summary(variant, "plain")
        rows.append(
            (
                name,
                variant,
                f"{cost / 1e6:.1f}",
                f"{1 + cost / total:.3f}",
                f"{s.ratio:.3f}",
                f"{timing.clean_count}/{len(timing.rounds)}",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_shortcut.json")
    parser.add_argument("--pruning", action="store_true", help="measure logits-row pruning (issue 13) instead")
    parser.add_argument("--keep", type=Path, help="write the models here (kept) instead of a temporary folder")
    args = parser.parse_args(argv)
    if args.pruning:
        with tempfile.TemporaryDirectory(prefix="ovxai-pruning-") as tmp:
            rows = [row for name in args.models for row in pruning(name, Path(tmp), args.rounds)]
        header = ("model", "maps", "hook MMACs/image", "x plain by MACs", "x plain OpenVINO f32 b1", "clean rounds")
        print(markdown_table(header, rows, "llrrrl"))
        return
    report: dict[str, Any] = {"openvino": ov.get_version(), "models": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="ovxai-shortcut-") as tmp:
        for name in args.models:
            folder = (args.keep or Path(tmp)) / name
            folder.mkdir(parents=True, exist_ok=True)
            paths = build(name, folder)
            entry: dict[str, Any] = {"path": str(paths["shortcut.path"]), "timings": [], "rss_mib": {}}
            entry["check"] = check(paths)
            print(name, entry["check"], flush=True)
            for variant in VARIANTS:
                entry["rss_mib"][variant] = peak_rss(sys.executable, paths[f"{variant}.xml"], 1, "CPU", "f32")
            for batch in args.batches:
                for engine, timing in (
                    ("OpenVINO default", partial(time_openvino, paths, batch, "default", args.rounds)),
                    ("OpenVINO f32", partial(time_openvino, paths, batch, "f32", args.rounds)),
                    ("ONNX Runtime", partial(time_onnxruntime, paths, batch, args.rounds)),
                ):
                    result = {"batch": batch, "engine": engine, **timing()}
                    entry["timings"].append(result)
                    rows.append((
                        name, entry["path"], batch, engine, f"{result['plain']['median_ms']:.1f}",
                        f"{result['shortcut']['ratio']:.3f}", f"{result['mosaic']['ratio']:.3f}", result["rounds"],
                    ))  # fmt: skip
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
            report["models"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    header = ("model", "shortcut", "batch", "engine", "plain ms", "shortcut / plain", "mosaic / plain", "clean rounds")
    print(markdown_table(header, rows, "llrlrrrl"))
    rss = [
        (
            name,
            *(f"{e['rss_mib'][v]['peak_mib']:.0f}" for v in VARIANTS),
            *(f"{e['check'][f'{v}_bin_mib']:.0f}" for v in VARIANTS),
        )
        for name, e in report["models"].items()
    ]
    header = ("model", "plain peak RSS MiB", "shortcut", "mosaic", "plain .bin MiB", "shortcut", "mosaic")
    print(markdown_table(header, rss, "lrrrrrr"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
