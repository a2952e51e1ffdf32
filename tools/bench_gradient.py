"""Cost of the gradient CAMs computed inside the exported graph, against the plain model and against the same
method run with torch autograd on CPU (the library a service would otherwise keep: pytorch-grad-cam, and tools/eval's
Integrated Grad-CAM).

Models: a ResNet-50 (models/architectures.py, random weights with calibrated BatchNorm, 1000 classes) explained at
``layer4`` and at ``layer3``, and EfficientNet-Lite0 with its real ImageNet weights at its default target (the head's
activation, 1280 x 7 x 7). Batch 1, one real photo. For each model and target:

* OpenVINO (CPU; the plugin's default precision, bf16 on CPUs with native bf16, and f32) and ONNX Runtime: the
  plain model and the model patched with each method (``--explain top1``, the predicted class), timed in alternated
  rounds by ``tools/harness.py``: the paired ratio patched / plain is the cost;
* torch (inference mode for the plain forward, autograd for the methods), alternated the same way;
* how the cost grows with K, the classes explained (Grad-CAM, OpenVINO default precision).

The machine may be shared: a round counts only if no run lost over 2 % of its time to other processes, and the
report says how many rounds were clean and how busy the machine was. Run from the repository root::

    .venv/bin/python tools/bench_gradient.py                 # about 30 minutes on 2 busy cores
    .venv/bin/python tools/bench_gradient.py --quick         # fewer rounds, no ONNX Runtime, no K sweep
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tools")]

import openvino as ov  # noqa: E402
import torch  # noqa: E402
from harness import Timing, Variant, alternate, markdown_table  # noqa: E402

from ovxai import HookOptions, export  # noqa: E402
from ovxai.exporter.from_torch import to_onnx  # noqa: E402
from ovxai.metadata import ModelInfo  # noqa: E402

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "integrated-gradcam")
TORCH_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}


def photo(size: int, mean: float, scale: float) -> np.ndarray:
    from PIL import Image

    image = Image.open(ROOT / "samples" / "photos" / "chelsea_cat.jpg").convert("RGB").resize((size, size))
    return ((np.asarray(image, np.float32) - mean) / scale).transpose(2, 0, 1)[None].copy()


def resnet50() -> torch.nn.Module:
    from models import architectures

    torch.manual_seed(0)
    return architectures.randomize(architectures.resnet50())


def efficientnet_lite0() -> torch.nn.Module:
    from models import efficientnet_lite0
    from tools.eval.methods import split_head_activation

    return split_head_activation(efficientnet_lite0.build())


# ------------------------------------------------------------------------------------------------ engines


class OpenVinoModel:
    def __init__(self, path: Path, precision: str) -> None:
        config = {"INFERENCE_PRECISION_HINT": "f32"} if precision == "f32" else {}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def __call__(self, x: np.ndarray) -> None:
        self.request.infer({0: x})


class OrtModel:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no spinning between rounds
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.feed = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> None:
        self.session.run(None, {self.feed: x})


def torch_method(
    net: torch.nn.Module, module: str, method: str, steps: int, black: float
) -> Callable[[np.ndarray], Any]:
    """The method on the torch model, for the predicted class, as a service would run it: pytorch-grad-cam's class
    (created once, its hooks kept) or tools/eval's Integrated Grad-CAM."""
    layer = net.get_submodule(module)
    if method == "integrated-gradcam":
        from tools.eval.methods import IntegratedGradCAM

        ig = IntegratedGradCAM(net, layer, black, steps=steps, batch=steps)

        def integrated(x: np.ndarray) -> Any:
            xt = torch.from_numpy(x)
            with torch.no_grad():
                cls = int(net(xt).argmax())
            return ig.raw(xt, cls)

        return integrated
    from models import zoo

    zoo.torchvision()
    import pytorch_grad_cam

    cam = getattr(pytorch_grad_cam, TORCH_NAMES[method])(net, [layer])
    return lambda x: cam(torch.from_numpy(x), targets=None)  # None: the predicted class


# --------------------------------------------------------------------------------------------------- runs


def timed(variants: list[Variant], rounds: int) -> tuple[Timing, dict[str, float], dict[str, float]]:
    """Median ms and paired ratio to the first variant, per variant."""
    timing = alternate(variants, rounds, warmup=2, budget_s=240)
    base = variants[0].name
    medians = {v.name: timing.summary(v.name).median * 1e3 for v in variants}
    ratios = {v.name: float(timing.summary(v.name, base).ratio or 1.0) for v in variants}
    return timing, medians, ratios


def bench_target(name: str, net: torch.nn.Module, onnx_path: Path, layer: str | None, module: str, x: np.ndarray,
                 info: ModelInfo, folder: Path, args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Every engine and method at one target."""
    print(f"== {name} at {module}", flush=True)
    patched: dict[str, dict[str, Path]] = {}
    for method in ("recipro", *METHODS):
        options = HookOptions(method=method, explain="top1")  # type: ignore[arg-type]
        patched[method] = {}
        for suffix in (".xml", ".onnx") if args.ort else (".xml",):
            out = folder / f"{name}-{module}-{method}{suffix}"
            export(onnx_path, out, layer=layer, options=options, fp16=False, info=info)
            patched[method][suffix] = out
    result: dict[str, Any] = {"engines": {}}
    engines: list[tuple[str, Callable[[Path], Callable[[np.ndarray], None]]]] = [
        ("OpenVINO default", lambda p: OpenVinoModel(p, "default")),
        ("OpenVINO f32", lambda p: OpenVinoModel(p, "f32")),
    ]
    if args.ort:
        engines.append(("ONNX Runtime", OrtModel))
    for engine, load in engines if "engines" in args.parts else []:
        suffix = ".onnx" if engine == "ONNX Runtime" else ".xml"
        plain = load(onnx_path if suffix == ".onnx" else folder / f"{name}-plain.xml")
        models = {m: load(paths[suffix]) for m, paths in patched.items()}
        variants = [Variant("plain", lambda plain=plain: plain(x))]
        variants += [Variant(m, lambda model=model: model(x)) for m, model in models.items()]
        timing, medians, ratios = timed(variants, args.rounds)
        precision = getattr(plain, "precision", "f32")
        result["engines"][engine] = {"precision": precision, "ms": medians, "ratio": ratios, **timing.report()}
        print(f"   {engine} ({precision}): " + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items()), flush=True)
        print(f"   {timing.verdict()}", flush=True)
    if "torch" not in args.parts:
        return result
    torch.set_grad_enabled(True)

    def forward() -> None:
        with torch.inference_mode():
            net(torch.from_numpy(x))

    black = float(-info.mean[0] / info.scale[0]) if info.mean and info.scale else 0.0
    steps = HookOptions(method="integrated-gradcam").step_count
    methods = {m: torch_method(net, module, m, steps, black) for m in METHODS}
    in_graph = {m: OpenVinoModel(patched[m][".xml"], "default") for m in METHODS}
    # torch's methods alternate with the in-graph ones in the same rounds: the paired ratio is the speed-up
    variants = [Variant("plain", forward)] + [Variant(m, lambda f=f: f(x)) for m, f in methods.items()]
    variants += [Variant(f"in graph {m}", lambda model=model: model(x)) for m, model in in_graph.items()]
    timing, medians, ratios = timed(variants, max(3, args.rounds // 2))
    speedup = {m: float(timing.summary(m, f"in graph {m}").ratio or 1.0) for m in METHODS}
    result["torch"] = {"ms": medians, "ratio": ratios, "torch_over_in_graph": speedup, **timing.report()}
    print("   torch: " + ", ".join(f"{m} {ratios[m]:.2f}x plain, {speedup[m]:.1f}x the in-graph time" for m in METHODS),
          flush=True)  # fmt: skip
    print(f"   {timing.verdict()}", flush=True)
    return result


def bench_classes(name: str, onnx_path: Path, layer: str, x: np.ndarray, folder: Path, counts: list[str],
                  args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Grad-CAM's cost as K grows (OpenVINO, default precision)."""
    print(f"== {name} at {layer}: Grad-CAM for K classes", flush=True)
    models = {"plain": OpenVinoModel(folder / f"{name}-plain.xml", "default")}
    for explain in counts:
        out = folder / f"{name}-{layer}-k-{explain}.xml"
        export(onnx_path, out, layer=layer, options=HookOptions(method="gradcam", explain=explain), fp16=False)
        models[explain] = OpenVinoModel(out, "default")
    variants = [Variant(k, lambda m=m: m(x)) for k, m in models.items()]
    timing, medians, ratios = timed(variants, args.rounds)
    print("   " + ", ".join(f"{k} {r:.2f}x" for k, r in ratios.items()), flush=True)
    return {"ms": medians, "ratio": ratios, **timing.report()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="clean alternated rounds per table (default 12)")
    parser.add_argument("--quick", action="store_true", help="4 rounds, OpenVINO only, no K sweep")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument(
        "--parts", default="engines,torch,classes", help="what to time: engines (patched / plain per engine), torch "
        "(torch autograd against the in-graph models), classes (the cost by K); default all",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.parts = {p.strip() for p in args.parts.split(",")}
    args.ort = not args.quick
    if args.quick:
        args.rounds = 4
    torch.set_num_threads(os.cpu_count() or 1)
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg(), "cpu": platform.processor()}
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        resnet = resnet50()
        onnx_path = to_onnx(resnet, folder / "resnet50.onnx", 224, "legacy")
        ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "resnet50-plain.xml"), compress_to_fp16=False)
        info = ModelInfo(mean=(123.675, 116.28, 103.53), scale=(58.395, 57.12, 57.375))
        x = photo(224, 123.675, 58.395)
        report["resnet50"] = {
            layer: bench_target("resnet50", resnet, onnx_path, layer, layer, x, info, folder, args)
            for layer in ("layer4", "layer3")
        }
        if not args.quick and "classes" in args.parts:
            report["resnet50"]["classes"] = {
                "layer4": bench_classes(
                    "resnet50", onnx_path, "layer4", x, folder, ["top1", "top5", "top20", "all"], args
                ),
                "layer3": bench_classes("resnet50", onnx_path, "layer3", x, folder, ["top1", "top5", "top20"], args),
            }
        from models import efficientnet_lite0 as recipe

        lite = efficientnet_lite0()
        lite_onnx = to_onnx(recipe.build(), folder / "lite0.onnx", recipe.SIZE, "legacy")
        ov.save_model(ov.convert_model(str(lite_onnx)), str(folder / "lite0-plain.xml"), compress_to_fp16=False)
        lite_info = ModelInfo(mean=(recipe.MEAN,), scale=(recipe.SCALE,))
        x = photo(recipe.SIZE, recipe.MEAN, recipe.SCALE)
        report["efficientnet_lite0"] = {
            "default": bench_target("lite0", lite, lite_onnx, None, "_head_act", x, lite_info, folder, args)
        }
    report["machine"]["load_after"] = os.getloadavg()
    print(tables(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def tables(report: dict[str, Any]) -> str:
    """The markdown tables: patched / plain per engine and method, and against torch."""
    lines = [f"machine: {report['machine']['cpus']} CPUs, load average {report['machine']['load_before'][0]:.1f} "
             f"before, {report['machine']['load_after'][0]:.1f} after"]  # fmt: skip
    for model, targets in report.items():
        if model == "machine":
            continue
        for target, result in targets.items():
            if target == "classes":
                continue
            header = ["engine (precision)", "plain ms", *("recipro", *METHODS)]
            rows = []
            for engine, numbers in result.get("engines", {}).items():
                cells = [f"{numbers['ratio'][m]:.2f}x" for m in ("recipro", *METHODS)]
                rows.append([f"{engine} ({numbers['precision']})", f"{numbers['ms']['plain']:.1f}", *cells])
            t = result.get("torch")
            if t is not None:
                rows.append(["torch autograd (f32)", f"{t['ms']['plain']:.1f}", "-",
                             *(f"{t['ratio'][m]:.2f}x" for m in METHODS)])  # fmt: skip
                speedup = t["torch_over_in_graph"]
                rows.append(["torch time / in-graph time (OpenVINO default)", "", "-",
                             *(f"{speedup[m]:.1f}" for m in METHODS)])  # fmt: skip
            title = f"{model} at {target}: latency patched / plain (batch 1, top1)"
            lines += ["", title, markdown_table(header, rows, "lr" + "r" * 6)]
        for target, numbers in targets.get("classes", {}).items():
            counts = [k for k in numbers["ratio"] if k != "plain"]
            row = ["patched / plain", *(f"{numbers['ratio'][k]:.2f}x" for k in counts)]
            title = f"{model} at {target}: Grad-CAM for K classes, OpenVINO default precision"
            lines += ["", title, markdown_table(["explain", *counts], [row], "l" + "r" * len(counts))]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
