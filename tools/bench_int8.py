"""INT8 IRs, as OpenVINO users ship them: latency, prediction equality and map agreement (run by hand).

Two models, each converted with ``ov.convert_model(module)`` and quantised by NNCF's post-training
quantisation (``nncf.quantize``), then patched by ``ovxai.export`` at their default layer:

* ResNet-50 (random weights, non-trivial BatchNorm statistics), calibrated on random images:
  plain INT8 vs patched INT8 latency at batch 1 and 8, in the CPU plugin's default precision and in f32,
  alternated rounds (tools/harness.py), medians and paired ratios; the prediction output of the
  patched model compared bit for bit with the plain model's.
* EfficientNet-Lite0 with its real ImageNet weights, calibrated on real photos (scikit-image's, the
  evaluation set of tools/eval): per photo, the top-1 class of the INT8 and FP32 models, and the Pearson
  correlation of the INT8 map with the FP32 map of the same class (logits scores: min-max of softmax
  would mostly compare rounding); the prediction output bit for bit against the plain INT8 model.

    python -m tools.bench_int8 [--rounds 20] [--photos 24] [--out out/bench_int8.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.harness import Variant, alternate, markdown_table  # noqa: E402

PRECISIONS: dict[str, dict[str, str]] = {"default": {}, "f32": {"INFERENCE_PRECISION_HINT": "f32"}}


def convert_and_quantize(net: Any, calibration: list[np.ndarray], folder: Path, name: str) -> tuple[Path, Path]:
    """FP32 IR from ``ov.convert_model`` and its NNCF INT8 twin, batch dynamic."""
    import nncf
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(net.eval(), example_input=torch.from_numpy(calibration[0]))
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *calibration[0].shape[1:]])})
    fp32 = folder / f"{name}_fp32.xml"
    ov.save_model(model, str(fp32), compress_to_fp16=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))
    int8 = folder / f"{name}_int8.xml"
    ov.save_model(quantized, str(int8))
    return fp32, int8


def outputs(compiled: ov.CompiledModel, x: np.ndarray) -> dict[str, np.ndarray]:
    result = compiled(x)
    return {next(iter(sorted(o.get_names())), "prediction"): np.asarray(result[o]) for o in compiled.outputs}


def prediction_of(named: dict[str, np.ndarray]) -> np.ndarray:
    return next(v for k, v in named.items() if k not in ("saliency_map", "feature_vector"))


def resnet50(folder: Path, rounds: int, batches: Sequence[int]) -> dict[str, Any]:
    from models import architectures as arch
    from ovxai import export

    rng = np.random.default_rng(0)
    calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(16)]
    _, int8 = convert_and_quantize(arch.randomize(arch.resnet50()), calibration, folder, "resnet50")
    result = export(int8, folder / "resnet50_int8_xai.xml", layer="layer4")
    core = ov.Core()
    rows: list[dict[str, Any]] = []
    for precision, config in PRECISIONS.items():
        plain, patched = (
            core.compile_model(str(int8), "CPU", config),
            core.compile_model(str(result.files[0]), "CPU", config),
        )
        for batch in batches:
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            same = bool(np.array_equal(prediction_of(outputs(plain, x)), prediction_of(outputs(patched, x))))
            requests = {"plain": plain.create_infer_request(), "patched": patched.create_infer_request()}
            timing = alternate([Variant(k, lambda r=r, x=x: r.infer({0: x})) for k, r in requests.items()], rounds)
            base, hooked = timing.summary("plain"), timing.summary("patched", "plain")
            rows.append({
                "batch": batch, "precision": precision, "prediction_identical": same,
                "plain_ms": base.median * 1e3, "patched_ms": hooked.median * 1e3, "ratio": hooked.ratio,
                "rounds": f"{timing.clean_count}/{len(timing.rounds)}", "verdict": timing.verdict(),
            })  # fmt: skip
            print(f"resnet50 int8 batch {batch} {precision}: ratio {hooked.ratio:.3f}, identical {same}", flush=True)
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
        name: export(path, folder / f"effl0_{name}_xai.xml", options=options, fp16=False).files[0]
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    core = ov.Core()
    names = labels()
    per_photo: list[dict[str, Any]] = []
    identical = {p: True for p in PRECISIONS}
    for precision, config in PRECISIONS.items():
        plain_int8 = core.compile_model(str(int8), "CPU", config)
        hooked = {k: core.compile_model(str(v), "CPU", config) for k, v in patched.items()}
        for sample, x in zip(samples, batch, strict=True):
            got = {k: outputs(c, x) for k, c in hooked.items()}
            identical[precision] &= bool(
                np.array_equal(prediction_of(got["int8"]), prediction_of(outputs(plain_int8, x)))
            )
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
    args = parser.parse_args(argv)
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
