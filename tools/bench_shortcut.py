"""The exact shortcut past the mosaic (issue 12), measured by hand: plain vs patched latency and memory.

Models without a global pool right after their target map, as torchvision and timm define them (random
weights, ``models/zoo.py``, 1000 classes), at the targets of the issue's table: SqueezeNet 1.1 at ``features``
(1 x 1 conv + ReLU before the pool), AlexNet and VGG-16-BN at ``features`` (flatten + an MLP), a conv-head hybrid
(timm EfficientViT-B0 at its last stage: 1 x 1 conv + BN + act, pool, MLP), and ResNet-50 at ``layer4``
(the classic fast path, which must not get slower), and ResNet-50 at ``layer3`` (layer4's 3 x 3 convolutions
follow: the incremental windows). Each exported three ways: plain, patched with the fast path (the closed-form
shortcut, or the windows), patched with the full mosaic (``path="mosaic"``). With ``--peer``, openvino-xai at
the same tensor of the same plain IR, ovxai's two IRs timed beside it in its OpenVINO (``tools/peer.py``).

OpenVINO CPU (plugin default precision and f32, ``PERFORMANCE_HINT=LATENCY``) and ONNX Runtime CPU, batch 1
and 8, alternated rounds (``tools/engines.py``; each timed run repeats a call for ~50 ms), medians and paired
ratios to plain; peak RSS of compile + one inference in a fresh process.

    python -m tools.bench_shortcut [--models squeezenet1_1 vgg16_bn] [--rounds 8] [--out out/bench_shortcut.json]
    python -m tools.bench_shortcut --pruning           # logits-row pruning (issue 13) instead
    python -m tools.bench_shortcut --quick             # SqueezeNet, batch 1, 2 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import peer
from tools.engines import RUN_S, compile_models, peak_rss, time_models
from tools.harness import markdown_table

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224  # models/zoo.py builds library models at 224 px with ImageNet heads of 1000 classes, as deployed
MODELS: dict[str, tuple[str, str, str]] = {  # name: (library, constructor, target as in issue 12's table)
    "squeezenet1_1": ("torchvision", "squeezenet1_1", "features"),
    "alexnet": ("torchvision", "alexnet", "features"),
    "vgg16_bn": ("torchvision", "vgg16_bn", "features"),
    "efficientvit_b0": ("timm", "efficientvit_b0", "stages.3"),
    "resnet50": ("torchvision", "resnet50", "layer4"),
    "resnet50_layer3": ("torchvision", "resnet50", "layer3"),  # the incremental windows through layer4
}
VARIANTS = ("plain", "shortcut", "mosaic")


def build(name: str, folder: Path) -> tuple[dict[str, Path], str]:
    """Plain ONNX + IR, and both patched variants in both formats; the hooked tensor's name."""
    from models import routes, zoo
    from ovxai import HookOptions, export

    library, constructor, layer = MODELS[name]
    net, size = zoo.build(f"{library}:{constructor}")
    paths = {"plain.onnx": routes.to_onnx(net, folder / f"{name}.onnx", size, "legacy")}
    paths["plain.xml"] = routes.onnx_to_ir(paths["plain.onnx"], folder / f"{name}.xml", fp16=False)
    for variant, fast in (("shortcut", True), ("mosaic", False)):
        for suffix in ("onnx", "xml"):
            result = export(paths["plain.onnx"], folder / f"{name}_{variant}.{suffix}", layer=layer,
                            options=HookOptions(path="auto" if fast else "mosaic"), fp16=False)  # fmt: skip
            paths[f"{variant}.{suffix}"] = Path(result.files[0])
        paths[f"{variant}.path"] = Path(result.path)
    return paths, result.target.tensor


def check(paths: dict[str, Path]) -> dict[str, float]:
    """The shortcut against the mosaic (maps) and the plain model (prediction), ONNX Runtime, batch 2; and the
    weight files' sizes: the shortcut's IR holds its re-laid weight instead of the original, never both."""
    x = np.random.default_rng(1).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    models = compile_models({v: paths[f"{v}.onnx"] for v in VARIANTS}, "onnxruntime")
    out = {variant: model.outputs(x) for variant, model in models.items()}
    logits = next(name for name in out["plain"])
    plain = out["plain"][logits]
    return {
        "max_map_diff_vs_mosaic": float(np.abs(out["shortcut"]["saliency_map"] - out["mosaic"]["saliency_map"]).max()),
        "max_prediction_diff_rel": float(np.abs(out["shortcut"][logits] - plain).max() / np.abs(plain).max()),
        **{f"{v}_bin_mib": paths[f"{v}.xml"].with_suffix(".bin").stat().st_size / 2**20 for v in VARIANTS},
    }


def time_engine(paths: dict[str, Path], batch: int, engine: str, precision: str, rounds: int) -> dict[str, Any]:
    """plain, shortcut and mosaic on one engine, alternated; each timed run repeats a call for ~``RUN_S``."""
    suffix = "xml" if engine == "openvino" else "onnx"
    models = compile_models({v: paths[f"{v}.{suffix}"] for v in VARIANTS}, engine, precision)
    x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
    timed = time_models(models, x, rounds, warmup=2, max_rounds=2 * rounds, repeat_s=RUN_S)
    kept = ("median_ms", "calls_per_run", "ratio")
    per_variant = {v: {k: timed["variants"][v][k] for k in kept} for v in VARIANTS}
    return {"rounds": f"{timed['rounds_clean']}/{timed['rounds_run']}", "verdict": timed["verdict"], **per_variant}


def pruning(name: str, folder: Path, rounds: int) -> list[tuple[Any, ...]]:
    """Issue 13 part 1: ``--score logits`` maps for every class vs the top 5 only (the copies then run only those
    classes' classifier rows): hook MACs per image (cost.py) and OpenVINO f32 batch 1 latency vs plain."""
    from models import routes, zoo
    from ovxai import HookOptions, export
    from ovxai.exporter.pipeline import load_model
    from ovxai.graph.macs import macs
    from ovxai.hook.cost import hook_macs
    from ovxai.hook.tail import plan_tail
    from ovxai.hook.target import pick_prediction, resolve

    library, constructor, layer = MODELS[name]
    net, size = zoo.build(f"{library}:{constructor}")
    plain = routes.to_onnx(net, folder / f"{name}.onnx", size, "legacy")
    graph = load_model(plain).graph
    prediction = pick_prediction(graph, None)
    plan = plan_tail(graph, resolve(graph, prediction, layer).tensor, prediction)
    total = macs(graph, graph.nodes)
    paths = {"plain": routes.onnx_to_ir(plain, folder / f"{name}.xml", fp16=False)}
    for variant, explain in (("all", "all"), ("top5", "top5")):
        options = HookOptions(score="logits", explain=explain)
        result = export(plain, folder / f"{name}_{variant}.xml", layer=layer, options=options, fp16=False)
        paths[variant] = Path(result.files[0])
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    timed = time_models(compile_models(paths, "openvino", "f32"), x, rounds, warmup=2, max_rounds=2 * rounds)
    rows = []
    for variant, selected in (("all", None), ("top5", 5)):
        cost = hook_macs(graph, plan, HookOptions(score="logits"), selected=selected)
        ratio, clean = timed["variants"][variant]["ratio"], f"{timed['rounds_clean']}/{timed['rounds_run']}"
        rows.append((name, variant, f"{cost / 1e6:.1f}", f"{1 + cost / total:.3f}", f"{ratio:.3f}", clean))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_shortcut.json")
    parser.add_argument("--pruning", action="store_true", help="measure logits-row pruning (issue 13) instead")
    parser.add_argument("--keep", type=Path, help="write the models here (kept) instead of a temporary folder")
    peer.add_argument(parser)
    parser.add_argument("--quick", action="store_true", help="smoke run: SqueezeNet (unless named), batch 1, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.rounds = [1], 2
        args.models = args.models if args.models != list(MODELS) else ["squeezenet1_1"]
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
            paths, target = build(name, folder)
            entry: dict[str, Any] = {"path": str(paths["shortcut.path"]), "timings": [], "rss_mib": {}}
            entry["check"] = check(paths)
            print(name, entry["check"], flush=True)
            for variant in VARIANTS:
                entry["rss_mib"][variant] = peak_rss(paths[f"{variant}.xml"], 1, "CPU", "f32")
            for batch in args.batches:
                for engine, timing in (
                    ("OpenVINO default", partial(time_engine, paths, batch, "openvino", "default", args.rounds)),
                    ("OpenVINO f32", partial(time_engine, paths, batch, "openvino", "f32", args.rounds)),
                    ("ONNX Runtime", partial(time_engine, paths, batch, "onnxruntime", "default", args.rounds)),
                ):
                    result = {"batch": batch, "engine": engine, **timing()}
                    entry["timings"].append(result)
                    rows.append((
                        name, entry["path"], batch, engine, f"{result['plain']['median_ms']:.1f}",
                        f"{result['shortcut']['ratio']:.3f}", f"{result['mosaic']['ratio']:.3f}", result["rounds"],
                    ))  # fmt: skip
                    print(" | ".join(str(c) for c in rows[-1]), flush=True)
            if args.peer is not None:
                request = peer.Request(
                    str(paths["plain.xml"]), str(folder), target=target, precisions=["default", "f32"],
                    extras={v: str(paths[f"{v}.xml"]) for v in VARIANTS[1:]}, rounds=args.rounds, warmup=2,
                )  # fmt: skip
                entry["peer"] = peer.run(request, peer.python(args.peer))
                print(peer.table(entry["peer"]), flush=True)
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
