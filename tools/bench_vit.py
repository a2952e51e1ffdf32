"""ViT-ReciproCAM on ViT-B/16 (issue 14): ovxai's token fast path and general path against the plain model and
against openvino-xai 1.1.0's ``ViTReciproCAM``, on the SAME plain IR, same mask, same score.

Models (``models/vits.py``'s ``vit_b16``: random weights, 224 px, 1000 classes, the last block's attention
peaked so that maps are well conditioned): torchvision ``vit_b_16`` and timm ``vit_base_patch16_224`` (the same
architecture; openvino-xai cannot patch torchvision's). Each is converted to an FP32 IR by ``ov.convert_model``
(``models/routes.py``'s ``to_ir``) and patched by ``ovxai.export`` at its automatic target (the last block's
input), logits scores, ``--mask`` (Gaussian: the reference's default), FP32 weights, as ``fast``
(``path="auto"``) and ``general`` (``path="mosaic"``).

* **ovxai side** (this venv, its OpenVINO): latency of plain / fast / general at each ``--batches``, OpenVINO CPU
  in the plugin's default precision (bf16 where the CPU has it) and f32, ``PERFORMANCE_HINT=LATENCY``, alternated
  rounds and medians (``tools/engines.py``), paired ratios to plain; IR sizes and the constants each patch added;
  peak RSS of compile + one inference in a fresh process.
* **peer side** (``--peer``: ``tools/peer.py``, openvino-xai in its own venv and OpenVINO 2024.4): inserts
  ``ViTReciproCAM`` (raw scores, so that both maps get the same normalisation here) into the same plain IR, saves
  its f32 map of the same image, and times plain / ovxai fast / ovxai general / openvino-xai at batch 1 (the only
  batch its branch supports) in ITS OpenVINO, both precisions, with peak RSS. The peer's maps and ovxai's
  fast-path maps (f32, this venv) are min-max normalised per class in float64 and must agree to ``--map-tol``.

    .venv/bin/python tools/bench_vit.py --peer [--models timm] [--rounds 10]
    .venv/bin/python tools/bench_vit.py --quick          # timm, batch 1, 2 rounds, no peer: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools import peer
from tools.engines import PRECISIONS, Model, compile_models, peak_rss, time_models
from tools.harness import markdown_table
from tools.ir_diff import added_constants, ir_size

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
PEER = peer.NAME
MODELS = {"torchvision": "vit_b_16", "timm": "vit_base_patch16_224"}
OVXAI = ("fast", "general")


def images(batch: int) -> np.ndarray:
    return np.random.default_rng(0).random((batch, 3, SIZE, SIZE), dtype=np.float32)


def normalised(maps: np.ndarray) -> np.ndarray:
    """(B, K, h, w) -> per image and class (x - min) / (max - min) in float64; a flat map gives zeros."""
    flat = maps.reshape(*maps.shape[:2], -1).astype(np.float64)
    low, high = flat.min(-1, keepdims=True), flat.max(-1, keepdims=True)
    return ((flat - low) / np.where(high > low, high - low, 1.0)).reshape(maps.shape)


def build(library: str, workdir: Path, mask: str) -> dict[str, Any]:
    """Plain FP32 IR and both patched IRs in ``workdir``; what export reported."""
    from models import routes, vits
    from ovxai import HookOptions, export

    workdir.mkdir(parents=True, exist_ok=True)
    routes.to_ir(vits.vit_b16(library), workdir / "plain.xml", SIZE)
    info: dict[str, Any] = {}
    for variant in OVXAI:
        options = HookOptions(score="logits", mask=mask, path="auto" if variant == "fast" else "mosaic")
        result = export(workdir / "plain.xml", workdir / f"{variant}.xml", options=options, fp16=False)
        info[variant] = {"target": result.target.layer, "path": result.path, "fast_path": result.fast_path}
    np.save(workdir / "image.npy", images(1))
    return info


def map_agreement(workdir: Path) -> dict[str, Any]:
    """ovxai's fast-path map (f32, this OpenVINO) against the peer's raw map, both min-max normalised here."""
    fast = Model(workdir / "fast.xml", "openvino", "f32")
    ours = normalised(fast.outputs(np.load(workdir / "image.npy"))["saliency_map"])
    theirs = normalised(np.load(workdir / f"{PEER}_map.npy"))
    diff = np.abs(ours - theirs)
    return {
        "max_abs_diff": float(diff.max()),
        "p99_abs_diff": float(np.quantile(diff, 0.99)),
        "shape": list(diff.shape),
    }


def static_sizes(workdir: Path, names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"plain": {"ir_bytes": ir_size(workdir / "plain.xml")}}
    for name in names:
        xml = workdir / f"{name}.xml"
        if xml.exists():
            out[name] = {"ir_bytes": ir_size(xml), "added_constants": added_constants(workdir / "plain.xml", xml)}
    return out


def bench_model(library: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": MODELS[library], "export": build(library, workdir, args.mask)}
    print(f"{library}: exported {entry['export']}", file=sys.stderr, flush=True)
    models = {"plain": workdir / "plain.xml", **{v: workdir / f"{v}.xml" for v in OVXAI}}
    if args.peer is not None:
        request = peer.Request(
            str(models["plain"]), str(workdir), method="vit_reciprocam", mask=args.mask,
            extras={v: str(models[v]) for v in OVXAI}, precisions=list(PRECISIONS), rounds=args.rounds, warmup=1,
            max_rounds=2 * args.rounds, rss=not args.no_rss, image=str(workdir / "image.npy"),
        )  # fmt: skip
        entry["peer"] = peer.run(request, peer.python(args.peer))
        print(f"{library}: peer {entry['peer'].get('error', 'ran')}", file=sys.stderr, flush=True)
        if "error" not in entry["peer"]:
            entry["map_agreement"] = map_agreement(workdir)
    entry["static"] = static_sizes(workdir, [*OVXAI, PEER])
    entry["timings"] = []
    for batch in args.batches:
        for precision in PRECISIONS:
            chosen = models if batch == 1 or args.general_batched else {k: models[k] for k in ("plain", "fast")}
            timed = time_models(compile_models(chosen, "openvino", precision), images(batch), args.rounds,
                                warmup=1, max_rounds=2 * args.rounds)  # fmt: skip
            entry["timings"].append({"precision": precision, **timed})
            print(f"{library}: batch {batch} {precision}: {timed['verdict']}", file=sys.stderr, flush=True)
    if not args.no_rss:
        entry["rss_mib"] = {
            f"{name} b{batch}": peak_rss(xml, batch, "CPU", "default")
            for batch in args.batches
            for name, xml in models.items()
            if batch == 1 or name != "general" or args.general_batched
        }
    return entry


def _precision(t: dict[str, Any]) -> str:
    return f"{t['precision']} ({t['variants']['plain']['precision']})"


def _rounds(t: dict[str, Any]) -> str:
    return f"{t['rounds_clean']}/{t['rounds_run']}"


def _ratios(t: dict[str, Any], names: Sequence[str]) -> list[str]:
    return [f"{t['variants'][v]['ratio']:.2f}x" if v in t["variants"] else "-" for v in names]


def tables(report: dict[str, Any]) -> str:
    ours, peers, sizes = [], [], []
    for entry in report["models"].values():
        model, peer_report = entry["model"], entry.get("peer", {})
        for t in entry["timings"]:
            plain_ms = f"{t['variants']['plain']['median_ms']:.1f}"
            ours.append((model, t["batch"], _precision(t), plain_ms, *_ratios(t, OVXAI), _rounds(t)))
        for t in peer_report.get("timings", []):
            plain_ms = f"{t['variants']['plain']['median_ms']:.1f}"
            peers.append((model, _precision(t), plain_ms, *_ratios(t, (*OVXAI, PEER)), _rounds(t)))
        if "error" in peer_report:
            peers.append((model, "-", "-", "-", "-", f"fails: {peer_report['error']}", "-"))
        for name, s in entry["static"].items():
            added = s.get("added_constants", {}).get("total_bytes", 0) / 2**20
            rss = peer_report.get("rss", {}).get(PEER) if name == PEER else entry.get("rss_mib", {}).get(f"{name} b1")
            sizes.append((model, name, f"{s['ir_bytes'] / 2**20:.1f}", f"{added:.2f}",
                          f"{rss['peak_mib']:.0f}" if rss else "-"))  # fmt: skip
    head = ("model", "batch", "precision (used)", "plain ms", "fast / plain", "general / plain", "clean rounds")
    peer_head = ("model", "precision (used)", "plain ms", "fast / plain", "general / plain", "openvino-xai / plain",
                 "clean rounds")  # fmt: skip
    parts = [
        markdown_table(head, ours, "lrlrrrl"),
        markdown_table(peer_head, peers, "llrrrrl"),
        markdown_table(("model", "IR", "size MiB", "added constants MiB", "peak RSS MiB (b1)"), sizes, "llrrr"),
    ]
    parts += [f"{e['model']}: ovxai vs openvino-xai maps {e['map_agreement']}" for e in report["models"].values()
              if "map_agreement" in e]  # fmt: skip
    return "\n\n".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    peer.add_argument(p)
    p.add_argument("--mask", choices=("onehot", "gaussian"), default="gaussian")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--general-batched", action="store_true", help="also time the general path above batch 1")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--map-tol", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=ROOT / "out/bench_vit.json")
    p.add_argument("--quick", action="store_true", help="a smoke run: timm (unless named), batch 1, 2 rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.rounds = [1], 2
        args.models = args.models if args.models != list(MODELS) else ["timm"]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"openvino": ov.get_version(), "mask": args.mask, "score": "logits", "models": {}}
    with tempfile.TemporaryDirectory(prefix="ovxai-vit-") as tmp:
        for library in args.models:
            report["models"][library] = bench_model(library, Path(tmp) / library, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(tables(report))
    print(f"wrote {args.out}")
    agreements = [e["map_agreement"]["max_abs_diff"] for e in report["models"].values() if "map_agreement" in e]
    return 0 if all(d <= args.map_tol for d in agreements) else 1


if __name__ == "__main__":
    sys.exit(main())
