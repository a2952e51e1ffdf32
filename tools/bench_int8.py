"""INT8 IRs, as OpenVINO users ship them: latency, prediction equality and map agreement (run by hand).

Two models, each converted with ``ov.convert_model(module)`` and quantised by NNCF's post-training
quantisation (``nncf.quantize``; both routes of ``models/routes.py``), then patched by ``ovxai.export`` at their
default layer:

* ResNet-50 (random weights, non-trivial BatchNorm statistics), calibrated on random images:
  plain INT8 vs patched INT8 latency at batch 1 and 8, in the CPU plugin's default precision and in f32,
  alternated rounds (tools/engines.py), medians and paired ratios; the prediction output of the
  patched model compared bit for bit with the plain model's.
* EfficientNet-Lite0 with its real ImageNet weights, calibrated on real photos (scikit-image's, the
  evaluation set of tools/eval): per photo, the top-1 class of the INT8 and FP32 models, and the Pearson
  correlation of the INT8 map with the FP32 map of the same class (logits scores: min-max of softmax
  would mostly compare rounding); the prediction output bit for bit against the plain INT8 model.

    python -m tools.bench_int8 [--rounds 20] [--photos 24] [--out out/bench_int8.json]
    python -m tools.bench_int8 --quick          # batch 1, 3 rounds, 4 photos: a smoke run
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

from tools.engines import PRECISIONS, Model, compile_models, time_models
from tools.harness import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def convert_and_quantize(net: Any, calibration: list[np.ndarray], folder: Path, name: str) -> tuple[Path, Path]:
    """FP32 IR from ``ov.convert_model`` and its NNCF INT8 twin, batch dynamic."""
    import torch

    from models import routes

    fp32 = routes.to_ir(net.eval(), folder / f"{name}_fp32.xml", torch.from_numpy(calibration[0]))
    return fp32, routes.to_int8(fp32, calibration, folder / f"{name}_int8.xml")


def prediction_of(named: dict[str, np.ndarray]) -> np.ndarray:
    return next(v for k, v in named.items() if k not in ("saliency_map", "feature_vector"))


def resnet50(folder: Path, rounds: int, batches: Sequence[int]) -> dict[str, Any]:
    from models import zoo
    from ovxai import export

    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(16)]
    _, int8 = convert_and_quantize(zoo.build("resnet50")[0], calibration, folder, "resnet50")
    result = export(int8, folder / "resnet50_int8_xai.xml", layer="layer4")
    paths = {"plain": int8, "patched": Path(result.files[0])}
    rows: list[dict[str, Any]] = []
    for precision in PRECISIONS:
        models = compile_models(paths, "openvino", precision)
        for batch in batches:
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            same = bool(
                np.array_equal(prediction_of(models["plain"].outputs(x)), prediction_of(models["patched"].outputs(x)))
            )
            timed = time_models(models, x, rounds)
            base, hooked = timed["variants"]["plain"], timed["variants"]["patched"]
            rows.append({
                "batch": batch, "precision": precision, "prediction_identical": same,
                "plain_ms": base["median_ms"], "patched_ms": hooked["median_ms"], "ratio": hooked["ratio"],
                "rounds": f"{timed['rounds_clean']}/{timed['rounds_run']}", "verdict": timed["verdict"],
            })  # fmt: skip
            print(f"resnet50 int8 batch {batch} {precision}: ratio {hooked['ratio']:.3f}, identical {same}", flush=True)
    return {"target": result.target.tensor, "fast_path": result.fast_path, "rows": rows}


def efficientnet_lite0(folder: Path, photos: int) -> dict[str, Any]:
    from models.efficientnet_lite0 import MEAN, SCALE, SIZE, build
    from ovxai import HookOptions, export
    from tools.eval.data import fidelity_set, labels

    samples = fidelity_set(photos, SIZE, seed=0)
    batch = [((s.image.astype(np.float32) - MEAN) / SCALE).transpose(2, 0, 1)[None] for s in samples]
    fp32, int8 = convert_and_quantize(build(), batch, folder, "effl0")
    options = HookOptions(score="logits")
    patched = {
        name: Path(export(path, folder / f"effl0_{name}_xai.xml", options=options, fp16=False).files[0])
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    names = labels()
    per_photo: list[dict[str, Any]] = []
    identical = {p: True for p in PRECISIONS}
    for precision in PRECISIONS:
        plain_int8 = Model(int8, "openvino", precision)
        hooked = compile_models(patched, "openvino", precision)
        for sample, x in zip(samples, batch, strict=True):
            got = {k: m.outputs(x) for k, m in hooked.items()}
            plain = prediction_of(plain_int8.outputs(x))
            identical[precision] &= bool(np.array_equal(prediction_of(got["int8"]), plain))
            if precision != "f32":
                continue
            top = {k: int(prediction_of(v)[0].argmax()) for k, v in got.items()}
            a, b = got["fp32"]["saliency_map"][0, top["fp32"]], got["int8"]["saliency_map"][0, top["fp32"]]
            per_photo.append({
                "photo": sample.name, "fp32_top1": names[top["fp32"]], "int8_top1": names[top["int8"]],
                "map_r": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
            })  # fmt: skip
    r = [p["map_r"] for p in per_photo]
    return {
        "photos": per_photo,
        "map_r_median": float(np.median(r)),
        "map_r_min": float(np.min(r)),
        "top1_agreement": float(np.mean([p["fp32_top1"] == p["int8_top1"] for p in per_photo])),
        "prediction_identical": identical,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="clean alternated rounds per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--photos", type=int, default=24, help="real photos (views) for EfficientNet-Lite0")
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_int8.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: batch 1, 3 rounds, 4 photos")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.rounds, args.photos = [1], 3, 4
    with tempfile.TemporaryDirectory(prefix="ovxai-int8-") as tmp:
        report = {
            "openvino": ov.get_version(),
            "efficientnet_lite0": efficientnet_lite0(Path(tmp), args.photos),
            "resnet50": resnet50(Path(tmp), args.rounds, args.batches),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    rows = [
        (r["batch"], r["precision"], f"{r['plain_ms']:.2f}", f"{r['patched_ms']:.2f}", f"{r['ratio']:.3f}",
         "yes" if r["prediction_identical"] else "NO", r["rounds"])
        for r in report["resnet50"]["rows"]
    ]  # fmt: skip
    header = ("batch", "precision", "plain INT8 ms", "patched INT8 ms", "ratio", "prediction identical", "clean rounds")
    print(markdown_table(header, rows, "rlrrrll"))
    eff = report["efficientnet_lite0"]
    print(
        f"EfficientNet-Lite0 INT8 vs FP32 on {len(eff['photos'])} real photos: map r median {eff['map_r_median']:.3f}, "
        f"min {eff['map_r_min']:.3f}; top-1 agreement {eff['top1_agreement']:.0%}; "
        f"prediction identical to plain INT8: {eff['prediction_identical']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
