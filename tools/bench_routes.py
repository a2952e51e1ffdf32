"""INT8 IRs made the way NNCF's own examples make them (issue 19), run by hand: latency against the plain INT8
model, the path taken, and the prediction bit for bit.

The route: ``torch.onnx.export`` (TorchScript-based), ``ov.Core().read_model("m.onnx")`` + ``ov.save_model``, then
``nncf.quantize``; ``ovxai.export`` patches the INT8 IR. Two models:

* ResNet-50 (random weights, BatchNorm calibrated on random images, quantised on random images) at ``layer4``;
* EfficientNet-Lite0 with its real ImageNet weights (quantised on crops of the real photos), default target.

For each, in the CPU plugin's default precision and in f32: plain and patched INT8 latency at each batch in
alternated rounds (tools/harness.py: medians, the paired ratio, rounds disturbed by other processes left out), the
machine's load meanwhile, the path the export took, and whether the patched model's prediction equals the plain
model's bit for bit on the timed batch (the export itself refuses a model whose prediction moved).

    python -m tools.bench_routes [--rounds 20] [--batches 1 8] [--out out/bench_routes.json]
"""

from __future__ import annotations

import argparse
import json
import os
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
CALIBRATION = 64  # images for nncf.quantize


def read_model_route(net: Any, size: int, calibration: list[np.ndarray], folder: Path, name: str) -> Path:
    """The INT8 IR of ``net`` through legacy ONNX export, ``read_model`` + ``save_model`` and ``nncf.quantize``."""
    import nncf

    from ovxai.exporter.from_torch import to_onnx

    onnx_file = to_onnx(net.eval(), folder / f"{name}.onnx", size, "legacy")
    fp32 = folder / f"{name}_read.xml"
    ov.save_model(ov.Core().read_model(os.fspath(onnx_file)), os.fspath(fp32), compress_to_fp16=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = nncf.quantize(
            ov.Core().read_model(os.fspath(fp32)), nncf.Dataset(calibration), subset_size=len(calibration)
        )
    int8 = folder / f"{name}_int8.xml"
    ov.save_model(quantized, os.fspath(int8))
    return int8


def prediction(compiled: ov.CompiledModel, x: np.ndarray) -> np.ndarray:
    """The first output that is not the hook's."""
    result = compiled(x)
    out = next(o for o in compiled.outputs if not {"saliency_map", "feature_vector"} & set(o.get_names()))
    return np.asarray(result[out])


def measure(int8: Path, patched: Path, size: int, rounds: int, batches: Sequence[int]) -> list[dict[str, Any]]:
    core = ov.Core()
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for precision, config in PRECISIONS.items():
        plain, hooked = core.compile_model(os.fspath(int8), "CPU", config), core.compile_model(patched, "CPU", config)
        for batch in batches:
            x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
            same = bool(np.array_equal(prediction(plain, x), prediction(hooked, x)))
            requests = {"plain": plain.create_infer_request(), "patched": hooked.create_infer_request()}
            timing = alternate([Variant(k, lambda r=r, x=x: r.infer({0: x})) for k, r in requests.items()], rounds)
            base, ratio = timing.summary("plain"), timing.summary("patched", "plain")
            rows.append({
                "batch": batch, "precision": precision, "prediction_identical": same,
                "plain_ms": base.median * 1e3, "patched_ms": ratio.median * 1e3, "ratio": ratio.ratio,
                "rounds": f"{timing.clean_count}/{len(timing.rounds)}", "load": timing.report(),
                "verdict": timing.verdict(),
            })  # fmt: skip
            print(f"  batch {batch} {precision}: ratio {ratio.ratio:.3f}, identical {same}", flush=True)
    return rows


def resnet50(folder: Path, rounds: int, batches: Sequence[int]) -> dict[str, Any]:
    from models import architectures as arch
    from ovxai import export

    sys.path.insert(0, str(ROOT / "tests"))
    import zoo

    rng = np.random.default_rng(1)
    calibration = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(CALIBRATION)]
    net = zoo.randomize(arch.randomize(arch.resnet50()), 64)
    int8 = read_model_route(net, 224, calibration, folder, "resnet50")
    result = export(int8, folder / "resnet50_int8_xai.xml", layer="layer4")
    print(f"resnet50 int8 (read_model route): {result.target.layer} on the {result.path} path", flush=True)
    rows = measure(int8, result.files[0], 224, rounds, batches)
    return {"target": result.target.layer, "path": result.path, "rows": rows}


def efficientnet_lite0(folder: Path, rounds: int, batches: Sequence[int]) -> dict[str, Any]:
    from models.efficientnet_lite0 import MEAN, SCALE, SIZE, build
    from ovxai import export
    from tools.eval.data import fidelity_set

    crops = fidelity_set(CALIBRATION, SIZE, seed=0)
    calibration = [((s.image.astype(np.float32) - MEAN) / SCALE).transpose(2, 0, 1)[None] for s in crops]
    int8 = read_model_route(build(), SIZE, calibration, folder, "effl0")
    result = export(int8, folder / "effl0_int8_xai.xml")
    print(f"efficientnet-lite0 int8 (read_model route): {result.target.layer} on the {result.path} path", flush=True)
    rows = measure(int8, result.files[0], SIZE, rounds, batches)
    return {"target": result.target.layer, "path": result.path, "rows": rows}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="clean alternated rounds per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=ROOT / "out/bench_routes.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ovxai-routes-") as tmp:
        report = {
            "openvino": ov.get_version(),
            "inference_precision_default": ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name(),
            "resnet50": resnet50(Path(tmp), args.rounds, args.batches),
            "efficientnet_lite0": efficientnet_lite0(Path(tmp), args.rounds, args.batches),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    table = [
        (model, report[model]["path"], r["batch"], r["precision"], f"{r['plain_ms']:.2f}", f"{r['patched_ms']:.2f}",
         f"{r['ratio']:.3f}", "yes" if r["prediction_identical"] else "NO", r["rounds"],
         f"{r['load']['cpu_share_during_timing']['other_processes']:.0%}")
        for model in ("resnet50", "efficientnet_lite0")
        for r in report[model]["rows"]
    ]  # fmt: skip
    header = ("INT8 model", "path", "batch", "precision", "plain ms", "patched ms", "ratio", "identical", "clean",
              "others' CPU")  # fmt: skip
    print(markdown_table(header, table, "llrlrrrlll"))
    print(f"default precision here: {report['inference_precision_default']}; wrote {args.out}")


if __name__ == "__main__":
    main()
