"""ViT-ReciproCAM on ViT-B/16 (issue 14): ovxai's token fast path and general path against the plain model and
against openvino-xai 1.1.0's ``ViTReciproCAM``, on the SAME plain IR, same mask, same score.

Models (random weights, 224 px, 1000 classes; tests/vit_zoo.py's ``randomize``, the last block's attention
peaked: see ``peak_last_attention``): torchvision ``vit_b_16``
and timm ``vit_base_patch16_224`` (the same architecture; openvino-xai cannot patch torchvision's, see
below). Each is converted to an FP32 IR by ``ov.convert_model`` (``ovxai.exporter.from_torch.to_ir``) and patched by
``ovxai.export`` at its automatic target (the last block's input), logits scores, ``--mask`` (Gaussian: the
reference's default), FP32 weights, as ``fast`` (``path="auto"``) and ``general`` (``path="mosaic"``).

* **ovxai side** (this venv, its OpenVINO): latency of plain / fast / general at each ``--batches``, OpenVINO CPU
  in the plugin's default precision (bf16 where the CPU has it) and f32, ``PERFORMANCE_HINT=LATENCY``, alternated
  rounds and medians by tools/harness.py, paired ratios to plain; IR sizes and the constants each patch added
  (tools/bench_latency.py); peak RSS of compile + one inference in a fresh process.
* **peer side** (``--peer-python``, a venv with ``openvino-xai==1.1.0``, which pins OpenVINO 2024.4): this same
  file with ``--peer-child`` inserts ``ViTReciproCAM`` (``embed_scaling=False``: raw scores, so that both maps get
  the same normalisation here) into the same plain IR, runs it on the same image in f32, and times plain /
  ovxai fast / ovxai general / openvino-xai at batch 1 (the only batch its branch supports) in ITS OpenVINO,
  both precisions, plus the peer's peak RSS. The peer's maps and ovxai's fast-path maps (f32, this venv) are
  min-max normalised per class in float64 and must agree to ``--map-tol``.

The child imports only numpy, openvino, openvino_xai and tools/{harness,bench_latency}.py (no torch, no ovxai).

    python3 -m venv .venv-xai && .venv-xai/bin/pip install openvino-xai==1.1.0     # once
    .venv/bin/python tools/bench_vit.py --peer-python .venv-xai/bin/python [--models timm] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path[:0] = [str(TOOLS)]

from bench_latency import added_constants, compile_model, infer_once, ir_size, peak_rss, used_precision  # noqa: E402
from harness import Timing, Variant, alternate, markdown_table  # noqa: E402

SIZE = 224
PEER = "openvino_xai"
MODELS = {"torchvision": "vit_b_16", "timm": "vit_base_patch16_224"}
OVXAI = ("fast", "general")
PRECISIONS = ("default", "f32")


# ------------------------------------------------------------------------------------------- shared helpers


def images(batch: int) -> np.ndarray:
    return np.random.default_rng(0).random((batch, 3, SIZE, SIZE), dtype=np.float32)


def normalised(maps: np.ndarray) -> np.ndarray:
    """(B, K, h, w) -> per image and class (x - min) / (max - min) in float64; a flat map gives zeros."""
    flat = maps.reshape(*maps.shape[:2], -1).astype(np.float64)
    low, high = flat.min(-1, keepdims=True), flat.max(-1, keepdims=True)
    return ((flat - low) / np.where(high > low, high - low, 1.0)).reshape(maps.shape)


def time_models(models: dict[str, Path], batch: int, precision: str, rounds: int) -> dict[str, Any]:
    """Alternated rounds of every model on one input; medians and ratios to 'plain'."""
    core, x = ov.Core(), images(batch)
    compiled = {name: compile_model(core, xml, "CPU", precision) for name, xml in models.items()}
    variants = [Variant(n, partial(infer_once, c.create_infer_request(), x)) for n, c in compiled.items()]
    timing: Timing = alternate(variants, rounds, warmup=1, max_rounds=2 * rounds)
    out: dict[str, Any] = {"batch": batch, "precision": precision, **timing.report(), "verdict": timing.verdict()}
    for name in models:
        summary = timing.summary(name, None if name == "plain" else "plain")
        out[name] = {"median_ms": summary.median * 1e3, "ratio": summary.ratio, "used": used_precision(compiled[name])}
    return out


# ------------------------------------------------------------------------------------- peer (its own venv)


def peer_child(workdir: Path, mask: str, rounds: int, rss: bool) -> dict[str, Any]:
    """Runs in openvino-xai's venv: insert, one f32 map on image.npy, then timing at batch 1."""
    from importlib.metadata import version

    from openvino_xai.methods.white_box.recipro_cam import ViTReciproCAM

    report: dict[str, Any] = {"openvino": ov.get_version(), "openvino_xai": version("openvino_xai")}
    model = ov.Core().read_model(str(workdir / "plain.xml"))
    try:
        method = ViTReciproCAM(model, embed_scaling=False, use_gaussian=mask == "gaussian", prepare_model=False)
        patched = method.prepare_model(load_model=False)
    except Exception as exc:  # its own types; the first line says what it found
        report["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        return report
    ov.save_model(patched, str(workdir / f"{PEER}.xml"), compress_to_fp16=False)
    compiled = ov.Core().compile_model(patched, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    np.save(workdir / f"{PEER}_map.npy", np.asarray(compiled(np.load(workdir / "image.npy"))["saliency_map"]))
    models = {"plain": workdir / "plain.xml", **{v: workdir / f"{v}.xml" for v in OVXAI}, PEER: workdir / f"{PEER}.xml"}
    for variant in OVXAI:  # ovxai's IRs come from a newer OpenVINO: time them here only if this one runs them
        try:
            ov.Core().compile_model(str(models[variant]), "CPU")
        except RuntimeError as exc:
            report[f"{variant}_error"] = str(exc).strip().splitlines()[0]
            del models[variant]
    report["timings"] = [time_models(models, 1, precision, rounds) for precision in PRECISIONS]
    if rss:
        report["rss_mib"] = peak_rss(sys.executable, models[PEER], 1, "CPU", "default")
    return report


def run_peer(python: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [python, str(Path(__file__).resolve()), "--peer-child", str(workdir), "--mask", args.mask]
    cmd += ["--rounds", str(args.rounds)] + ([] if args.no_rss else ["--rss"])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": f"peer process failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


# -------------------------------------------------------------------------------------- ovxai (this venv)


def build(library: str, workdir: Path, mask: str) -> dict[str, Any]:
    """Plain FP32 IR and both patched IRs in ``workdir``; what export reported."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import vit_zoo
    import zoo

    from ovxai import HookOptions, export
    from ovxai.exporter.from_torch import to_ir

    if library == "torchvision":
        net = zoo.torchvision().models.vit_b_16(weights=None)
    else:
        net = zoo.timm().create_model(MODELS[library], pretrained=False)
    vit_zoo.randomize(net, seed=0)
    peak_last_attention(net, library)
    workdir.mkdir(parents=True, exist_ok=True)
    to_ir(net, workdir / "plain.xml", SIZE)
    info: dict[str, Any] = {}
    for variant in OVXAI:
        options = HookOptions(score="logits", mask=mask, path="auto" if variant == "fast" else "mosaic")
        result = export(workdir / "plain.xml", workdir / f"{variant}.xml", options=options, fp16=False)
        info[variant] = {"target": result.target.layer, "path": result.path, "fast_path": result.fast_path}
    np.save(workdir / "image.npy", images(1))
    return info


ATTENTION_PEAK = 8.0


def peak_last_attention(net: Any, library: str) -> None:
    """Scale the last block's query and key projections by ATTENTION_PEAK (logits x 64).

    With random weights ViT-B's attention is near uniform: masking one of 196 tokens moves the logits by
    ~1e-3 against logits of ~6, so per-class min-max maps are float32 rounding (torch's own float32 maps
    differ from float64 by up to 1.0). Peaked attention, as trained ViTs have, makes the maps well
    conditioned (torch float32 vs float64: ~1e-4), so agreement to 1e-3 means something."""
    if library == "torchvision":
        attention = net.encoder.layers[-1].self_attention
        weight, bias = attention.in_proj_weight, attention.in_proj_bias
    else:
        weight, bias = net.blocks[-1].attn.qkv.weight, net.blocks[-1].attn.qkv.bias
    import torch

    depth = weight.shape[1]
    with torch.no_grad():
        weight[: 2 * depth] *= ATTENTION_PEAK
        bias[: 2 * depth] *= ATTENTION_PEAK


def map_agreement(workdir: Path) -> dict[str, Any]:
    """ovxai's fast-path map (f32, this OpenVINO) against the peer's raw map, both min-max normalised here."""
    compiled = ov.Core().compile_model(str(workdir / "fast.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ours = normalised(np.asarray(compiled(np.load(workdir / "image.npy"))["saliency_map"]))
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
    if args.peer_python:
        entry["peer"] = run_peer(args.peer_python, workdir, args)
        print(f"{library}: peer {entry['peer'].get('error', 'ran')}", file=sys.stderr, flush=True)
        if "error" not in entry["peer"]:
            entry["map_agreement"] = map_agreement(workdir)
    entry["static"] = static_sizes(workdir, [*OVXAI, PEER])
    models = {"plain": workdir / "plain.xml", **{v: workdir / f"{v}.xml" for v in OVXAI}}
    entry["timings"] = []
    for batch in args.batches:
        for precision in PRECISIONS:
            chosen = models if batch == 1 or args.general_batched else {k: models[k] for k in ("plain", "fast")}
            entry["timings"].append(time_models(chosen, batch, precision, args.rounds))
            print(f"{library}: {entry['timings'][-1]}", file=sys.stderr, flush=True)
    if not args.no_rss:
        entry["rss_mib"] = {
            f"{name} b{batch}": peak_rss(sys.executable, xml, batch, "CPU", "default")
            for batch in args.batches
            for name, xml in models.items()
            if batch == 1 or name != "general" or args.general_batched
        }
    return entry


def _precision(t: dict[str, Any]) -> str:
    return f"{t['precision']} ({t['plain']['used']})"


def _rounds(t: dict[str, Any]) -> str:
    return f"{t['rounds_clean']}/{t['rounds_run']}"


def _ratios(t: dict[str, Any], names: Sequence[str]) -> list[str]:
    return [f"{t[v]['ratio']:.2f}x" if v in t else "-" for v in names]


def tables(report: dict[str, Any]) -> str:
    ours, peers, sizes = [], [], []
    for entry in report["models"].values():
        model, peer = entry["model"], entry.get("peer", {})
        for t in entry["timings"]:
            ours.append((model, t["batch"], _precision(t), f"{t['plain']['median_ms']:.1f}", *_ratios(t, OVXAI),
                         _rounds(t)))  # fmt: skip
        for t in peer.get("timings", []):
            peers.append((model, _precision(t), f"{t['plain']['median_ms']:.1f}", *_ratios(t, (*OVXAI, PEER)),
                          _rounds(t)))  # fmt: skip
        if "error" in peer:
            peers.append((model, "-", "-", "-", "-", f"fails: {peer['error']}", "-"))
        for name, s in entry["static"].items():
            added = s.get("added_constants", {}).get("total_bytes", 0) / 2**20
            rss = peer.get("rss_mib") if name == PEER else entry.get("rss_mib", {}).get(f"{name} b1")
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
    p.add_argument("--peer-python", help="python of a venv with openvino-xai==1.1.0 (e.g. .venv-xai/bin/python)")
    p.add_argument("--mask", choices=("onehot", "gaussian"), default="gaussian")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--general-batched", action="store_true", help="also time the general path above batch 1")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--no-rss", action="store_true")
    p.add_argument("--map-tol", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=ROOT / "out/bench_vit.json")
    p.add_argument("--peer-child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--rss", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peer_child:
        print(json.dumps(peer_child(args.peer_child, args.mask, args.rounds, args.rss)))
        return 0
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
