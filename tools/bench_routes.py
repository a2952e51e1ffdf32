"""Models written by other tools (issue 19), run by hand: the path the export takes, whether the patched model's
prediction equals the plain model's bit for bit, and patched / plain latency.

Every model goes the route NNCF's examples take: ``torch.onnx.export`` (TorchScript-based), then
``ov.Core().read_model("m.onnx")`` + ``ov.save_model`` (``models/routes.py``: ``read_model_ir``), then as shipped:

* ``resnet50 fp32``: ResNet-50 (random weights, non-trivial BatchNorm statistics) at ``layer4``, FP32 weights;
* ``resnet50 w8``: the same after ``nncf.compress_weights`` (INT8 weight-only);
* ``resnet50 int8``: the same after ``nncf.quantize`` (INT8, calibrated on random images);
* ``effl0 int8``: EfficientNet-Lite0 with its real ImageNet weights, ``nncf.quantize`` on crops of the real photos,
  default target.

``ovxai.export`` patches each file (and itself refuses a patched model whose prediction moved). Then, in the CPU
plugin's default precision (bf16 on CPUs that have it) and in f32: the prediction of both models on one batch,
compared bit for bit, and their latency in alternated rounds (tools/engines.py: medians, the paired ratio, rounds
disturbed by other processes left out).

    python -m tools.bench_routes [--rounds 20] [--batches 1 8] [--out out/bench_routes.json]
    python -m tools.bench_routes --quick          # batch 1, 3 rounds: a smoke run
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

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.engines import PRECISIONS, compile_models, time_models
from tools.harness import markdown_table

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = 32  # images for nncf.quantize


def read_model_ir(net: Any, size: int, folder: Path, name: str) -> Path:
    """``net`` through the legacy ONNX exporter and ``read_model`` + ``save_model``: an FP32 IR."""
    from models import routes

    onnx_file = routes.to_onnx(net.eval(), folder / f"{name}.onnx", size, "legacy")
    return routes.read_model_ir(onnx_file, folder / f"{name}_read.xml")


def compressed(fp32: Path, path: Path) -> Path:
    """``nncf.compress_weights`` (INT8 weight-only) of an IR."""
    import nncf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ov.save_model(nncf.compress_weights(ov.Core().read_model(str(fp32))), str(path))
    return path


def prediction_of(named: dict[str, np.ndarray]) -> np.ndarray:
    return next(v for k, v in named.items() if k not in ("saliency_map", "feature_vector", "saliency_classes"))


def measure(
    name: str, plain: Path, layer: str | None, size: int, rounds: int, batches: Sequence[int]
) -> dict[str, Any]:
    from ovxai import export

    # the weights as the plain file stores them (export's default would compress FP32 ones to FP16: another model)
    result = export(plain, plain.with_name(f"{plain.stem}_xai.xml"), layer=layer, fp16=False)
    print(f"{name}: {result.target.layer} on the {result.path} path, reads {result.reads}", flush=True)
    paths = {"plain": plain, "patched": Path(result.files[0])}
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for precision in PRECISIONS:
        models = compile_models(paths, "openvino", precision)
        for batch in batches:
            x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
            want, got = (prediction_of(models[k].outputs(x)) for k in ("plain", "patched"))
            same = bool(np.array_equal(want, got))
            timed = time_models(models, x, rounds)
            base, hooked = timed["variants"]["plain"], timed["variants"]["patched"]
            rows.append({
                "batch": batch, "precision": precision, "engine_precision": hooked["precision"],
                "prediction_identical": same, "max_shift": float(np.abs(want - got).max()),
                "plain_ms": base["median_ms"], "patched_ms": hooked["median_ms"], "ratio": hooked["ratio"],
                "rounds": f"{timed['rounds_clean']}/{timed['rounds_run']}", "verdict": timed["verdict"],
            })  # fmt: skip
            print(f"  batch {batch} {precision}: ratio {hooked['ratio']:.3f}, identical {same}", flush=True)
    return {"target": result.target.layer, "path": result.path, "reads": result.reads, "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="clean alternated rounds per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_routes.json")
    parser.add_argument("--quick", action="store_true", help="a smoke run: batch 1, 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.rounds = [1], 3
    from models import routes, zoo
    from models.efficientnet_lite0 import MEAN, SCALE, SIZE, build
    from tools.eval.data import fidelity_set

    report: dict[str, Any] = {"openvino": ov.get_version()}
    with tempfile.TemporaryDirectory(prefix="ovxai-routes-") as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(1)
        calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(CALIBRATION)]
        fp32 = read_model_ir(zoo.build("resnet50")[0], 224, folder, "resnet50")
        crops = fidelity_set(CALIBRATION, SIZE, seed=0)
        photos = [((s.image.astype(np.float32) - MEAN) / SCALE).transpose(2, 0, 1)[None] for s in crops]
        effl0 = read_model_ir(build(), SIZE, folder, "effl0")
        cases = {
            "resnet50 fp32": (fp32, "layer4", 224),
            "resnet50 w8": (compressed(fp32, folder / "resnet50_w8.xml"), "layer4", 224),
            "resnet50 int8": (routes.to_int8(fp32, calibration, folder / "resnet50_int8.xml"), "layer4", 224),
            "effl0 int8": (routes.to_int8(effl0, photos, folder / "effl0_int8.xml"), None, SIZE),
        }
        for name, (path, layer, size) in cases.items():
            report[name] = measure(name, path, layer, size, args.rounds, args.batches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = [
        (name, f"{report[name]['path']}, {report[name]['reads']} reads", r["batch"],
         f"{r['precision']} ({r['engine_precision']})",
         "yes" if r["prediction_identical"] else f"NO ({r['max_shift']:.3g})",
         f"{r['plain_ms']:.2f}", f"{r['patched_ms']:.2f}", f"{r['ratio']:.3f}", r["rounds"])
        for name in cases
        for r in report[name]["rows"]
    ]  # fmt: skip
    header = ("model", "path", "batch", "precision", "identical", "plain ms", "patched ms", "ratio", "clean")
    print(markdown_table(header, table, "llrllrrrl"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
