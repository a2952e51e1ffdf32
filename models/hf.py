"""Hugging Face ``transformers`` image classifiers from small configs with random weights (tests and tools).

Every model is one of the library's own ``*ForImageClassification`` classes built offline from a config (no hub),
wrapped as ``model`` in a module whose forward returns the logits, as users export them (module paths
'model.vit.encoder.layer.2'). Sizes are tiny (a 4 x 4 to 8 x 8 token grid, width 32, 2 heads) so that the torch
oracle and the three exports take about a second each. The library initialises for training (weights of std
0.02, zero biases, zero CLS token and relative position tables): :func:`randomize` gives every Linear a
unit-gain weight and a random bias, every LayerNorm a random affine, every BatchNorm calibrated statistics,
tokens, position embeddings and position-bias tables unit scale, and the head a spread (logits of a few units,
so that masked copies differ well above float32 rounding).

transformers imports torchvision's image utilities: it is imported after :func:`zoo.torchvision`, which keeps
torchvision's compiled operators out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models import zoo

CLASSES = 10


@dataclass(frozen=True)
class HfCase:
    """One Hugging Face classifier: how to build it and where ViT-ReciproCAM cuts it."""

    name: str
    build: Callable[[], nn.Module]
    size: int  # image height and width
    block: str | None  # the automatic target's block (None: a CNN, explained at a feature map)
    norm: str | None  # that block's first norm (None: the block has none, LN1 is the identity)
    aux_tokens: int  # CLS + distillation + registers before the grid
    grid: tuple[int, int]  # the grid the automatic target is explained on


def transformers() -> Any:
    zoo.torchvision()
    import transformers as hf

    hf.logging.set_verbosity_error()
    return hf


class Logits(nn.Module):
    """``model(pixel_values=x).logits``: the classifier as an exporter sees it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits  # type: ignore[no-any-return]


_VIT = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}
_TOKENS = ("cls_token", "distillation_token", "register_tokens", "position_embeddings", "mask_token")
_BIAS_TABLES = ("relative_position_bias_table", "attention_biases")


def _build(config_name: str, model_name: str, seed: int, size: int, **config: Any) -> nn.Module:
    hf = transformers()
    torch.manual_seed(seed)
    model = getattr(hf, model_name)(getattr(hf, config_name)(num_labels=CLASSES, **config))
    return randomize(Logits(model), size, seed)


def vit(seed: int = 0) -> nn.Module:
    return _build("ViTConfig", "ViTForImageClassification", seed, 32, image_size=32, patch_size=8, **_VIT)


def deit(seed: int = 1) -> nn.Module:
    """DeiT with its distillation token: two auxiliary tokens, two heads averaged."""
    return _build("DeiTConfig", "DeiTForImageClassificationWithTeacher", seed, 32, image_size=32, patch_size=8, **_VIT)


def beit(seed: int = 2, relative: bool = True) -> nn.Module:
    """BEiT as released: a relative position bias (heads, T, T) in every block's attention, mean-pooled patch
    tokens; ``relative=False``: absolute position embeddings instead."""
    position = {"use_relative_position_bias": True} if relative else {"use_absolute_position_embeddings": True}
    return _build("BeitConfig", "BeitForImageClassification", seed, 32, image_size=32, patch_size=8, **_VIT, **position)


def dinov2(seed: int = 3) -> nn.Module:
    """Dinov2: position embeddings interpolated to the input size (bicubic) in every forward; CLS + mean head."""
    config = {k: v for k, v in _VIT.items() if k != "intermediate_size"}
    return _build("Dinov2Config", "Dinov2ForImageClassification", seed, 32, image_size=32, patch_size=8, **config)


def swin(seed: int = 4) -> nn.Module:
    """Swin: windowed attention over an 8 x 8 token map, merged to 4 x 4 for the last stage."""
    return _build("SwinConfig", "SwinForImageClassification", seed, 32, image_size=32, patch_size=4, embed_dim=16,
                  depths=[2, 2], num_heads=[2, 2], window_size=2)  # fmt: skip


def mobilevit(seed: int = 5) -> nn.Module:
    """MobileViT: a CNN whose blocks unfold their maps into patches for small transformers (a hybrid)."""
    necks = [8, 8, 16, 16, 16, 24, 32]
    return _build("MobileViTConfig", "MobileViTForImageClassification", seed, 64, image_size=64,
                  hidden_sizes=[16, 16, 16], neck_hidden_sizes=necks, num_attention_heads=2)  # fmt: skip


def levit(seed: int = 6) -> nn.Module:
    """LeViT: no norm before attention (Linear + BatchNorm projections), learnt attention biases, token
    subsampling between stages."""
    return _build("LevitConfig", "LevitForImageClassification", seed, 224, image_size=224, hidden_sizes=[32, 48, 64],
                  num_attention_heads=[2, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8])  # fmt: skip


def convnext(seed: int = 7) -> nn.Module:
    return _build("ConvNextConfig", "ConvNextForImageClassification", seed, 64, hidden_sizes=[8, 16, 24, 32],
                  depths=[1, 1, 1, 1])  # fmt: skip


def resnet(seed: int = 8) -> nn.Module:
    return _build("ResNetConfig", "ResNetForImageClassification", seed, 64, embedding_size=8,
                  hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1])  # fmt: skip


def efficientnet(seed: int = 9) -> nn.Module:
    return _build("EfficientNetConfig", "EfficientNetForImageClassification", seed, 64, image_size=64,
                  width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320)  # fmt: skip


def mobilenet_v1(seed: int = 10) -> nn.Module:
    """TensorFlow's 'same' padding, computed in the graph from each map's size."""
    return _build("MobileNetV1Config", "MobileNetV1ForImageClassification", seed, 64, image_size=64,
                  depth_multiplier=0.25)  # fmt: skip


def mobilenet_v2(seed: int = 11) -> nn.Module:
    return _build("MobileNetV2Config", "MobileNetV2ForImageClassification", seed, 64, image_size=64,
                  depth_multiplier=0.25)  # fmt: skip


def regnet(seed: int = 12) -> nn.Module:
    return _build("RegNetConfig", "RegNetForImageClassification", seed, 64, embedding_size=8,
                  hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], groups_width=8)  # fmt: skip


_B = "model.{}.layers.{}"
CASES = {
    case.name: case
    for case in (
        HfCase("vit", vit, 32, _B.format("vit", 2), _B.format("vit", 2) + ".layernorm_before", 1, (4, 4)),
        HfCase("deit", deit, 32, _B.format("deit", 2), _B.format("deit", 2) + ".layernorm_before", 2, (4, 4)),
        HfCase("beit", beit, 32, _B.format("beit", 2), _B.format("beit", 2) + ".layernorm_before", 1, (4, 4)),
        HfCase(
            "beit_abs",
            lambda: beit(relative=False),
            32,
            _B.format("beit", 2),
            _B.format("beit", 2) + ".layernorm_before",
            1,
            (4, 4),
        ),
        HfCase("dinov2", dinov2, 32, "model.dinov2.encoder.layer.2", "model.dinov2.encoder.layer.2.norm1", 1, (4, 4)),
        HfCase(
            "swin",
            swin,
            32,
            "model.swin.encoder.layers.1.blocks.1",
            "model.swin.encoder.layers.1.blocks.1.layernorm_before",
            0,
            (4, 4),
        ),
        HfCase("levit", levit, 224, "model.levit.encoder.stages.2.layers.0", None, 0, (4, 4)),
        HfCase("mobilevit", mobilevit, 64, None, None, 0, (2, 2)),
        HfCase("convnext", convnext, 64, None, None, 0, (2, 2)),
        HfCase("resnet", resnet, 64, None, None, 0, (2, 2)),
        HfCase("efficientnet", efficientnet, 64, None, None, 0, (2, 2)),
    )
}


def _head(net: nn.Module) -> list[nn.Linear]:
    """The class-score Linears (DeiT's two; LeViT's inside its classification layers)."""
    return [
        m
        for n, m in net.named_modules()
        if isinstance(m, nn.Linear) and getattr(m, "out_features", 0) == CLASSES and "classifier" in n
    ]


@torch.no_grad()
def randomize(net: nn.Module, size: int, seed: int) -> nn.Module:
    """Seeded unit-gain Linears, random biases, LayerNorm affines, tokens and bias tables, BatchNorm statistics
    calibrated on random images, a spread head (module doc); returns ``net`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.in_features**0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
        elif isinstance(module, nn.LayerNorm | nn.GroupNorm) and module.weight is not None:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
    for name, param in net.named_parameters():
        leaf = name.split(".")[-1]
        if leaf in _TOKENS or leaf in _BIAS_TABLES:
            param.copy_(torch.randn(param.shape, generator=gen) * (0.5 if leaf in _TOKENS else 1.0))
    zoo.randomize(net, size, seed)  # BatchNorm statistics, and the last Linear spread
    for head in _head(net):
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * (4.0 / head.in_features) ** 0.5)
        head.bias.zero_()
    net.eval()
    net(torch.rand(1, 3, size, size, generator=gen))  # LeViT caches its attention biases on the first eval call,
    return net  # which a tracer cannot hold as a constant: that call happens here, as in any session that ran it


def build(name: str) -> nn.Module:
    return CASES[name].build()


def example(name: str, batch: int, seed: int = 1) -> torch.Tensor:
    size = CASES[name].size
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
