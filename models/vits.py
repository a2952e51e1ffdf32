"""Vision transformers from torchvision's and timm's own model code, with random weights (imports go through
``zoo.py``, which keeps torchvision's compiled operators out): the tests' tiny token classifiers and the
benchmarks' ViT-B/16.

The tests' models are tiny (32 px, 8 px patches: a 4 x 4 token grid, dim 32, 2 heads, 3 blocks) so that the torch
oracle (N = 16 copies) and both exports take well under a second. The libraries initialise for training
(weights of std 0.02, zero biases, CLS token ~1e-6): attention would be near uniform, every bias and token
zero, and a hook that mixes up the masked tokens' keys or the norm's bias could still pass. :func:`randomize`
gives every Linear a unit-gain weight and a random bias, every LayerNorm a random affine, the CLS,
distillation and register tokens and the position embedding unit scale, and the heads a spread (logits of
a few units, so that masked copies differ well above float32 rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from models import zoo

SIZE, PATCH, DIM, HEADS, DEPTH, CLASSES = 32, 8, 32, 2, 3, 10
SWIN_SIZE = 32  # patch 4: an 8 x 8 map, merged to 4 x 4 for the last stage
GRID = SIZE // PATCH


@dataclass(frozen=True)
class VitCase:
    """One token classifier: how to build it and how its blocks are named."""

    name: str
    build: Callable[[], nn.Module]
    blocks: str  # module path of the blocks' container: '<blocks>.<i>' is block i
    norm1: str  # name of a block's first norm inside the block
    aux_tokens: int  # CLS + distillation + registers
    kwargs: dict[str, Any] = field(default_factory=dict)

    def block(self, index: int) -> str:
        prefix = "encoder_layer_" if self.blocks.endswith("encoder.layers") else ""
        return f"{self.blocks}.{prefix}{index % DEPTH}"

    def norm(self, index: int) -> str:
        return f"{self.block(index)}.{self.norm1}"


def _timm_vit(seed: int, **kwargs: Any) -> nn.Module:
    VisionTransformer = zoo.timm().models.vision_transformer.VisionTransformer
    torch.manual_seed(seed)
    net = VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES, **kwargs
    )
    return randomize(net, seed)


def _deit(seed: int) -> nn.Module:
    VisionTransformerDistilled = zoo.timm().models.deit.VisionTransformerDistilled
    torch.manual_seed(seed)
    net = VisionTransformerDistilled(
        img_size=SIZE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, num_classes=CLASSES
    )
    return randomize(net, seed)


def _swin(seed: int) -> nn.Module:
    """timm's Swin: windowed and shifted attention over (B, h, w, D) token maps, patch merging between
    stages; the last stage is a 4 x 4 map (32 px, patch 4, one merge) in 2 x 2 windows, so shifts apply."""
    SwinTransformer = zoo.timm().models.swin_transformer.SwinTransformer
    torch.manual_seed(seed)
    net = SwinTransformer(
        img_size=SWIN_SIZE, patch_size=4, window_size=2, embed_dim=DIM, depths=(2, 2), num_heads=(HEADS, HEADS),
        num_classes=CLASSES,
    )  # fmt: skip
    return randomize(net, seed)


def _torchvision_vit(seed: int) -> nn.Module:
    VisionTransformer = zoo.torchvision().models.vision_transformer.VisionTransformer
    torch.manual_seed(seed)
    net = VisionTransformer(
        image_size=SIZE, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM, mlp_dim=2 * DIM,
        num_classes=CLASSES,
    )  # fmt: skip
    return randomize(net, seed)


TIMM_BLOCKS, TV_BLOCKS = "blocks", "encoder.layers"
CASES = {
    case.name: case
    for case in (
        VitCase("torchvision_vit", lambda: _torchvision_vit(0), TV_BLOCKS, "ln_1", 1),
        VitCase("timm_vit", lambda: _timm_vit(1), TIMM_BLOCKS, "norm1", 1),
        VitCase("deit_distilled", lambda: _deit(2), TIMM_BLOCKS, "norm1", 2),
        VitCase("vit_reg4", lambda: _timm_vit(3, reg_tokens=4, no_embed_class=True), TIMM_BLOCKS, "norm1", 5),
        VitCase("vit_gap", lambda: _timm_vit(4, global_pool="avg", class_token=False), TIMM_BLOCKS, "norm1", 0),
        VitCase("vit_cls_gap", lambda: _timm_vit(5, global_pool="avg", class_token=True), TIMM_BLOCKS, "norm1", 1),
    )
}


def _heads(net: nn.Module) -> list[nn.Linear]:
    """The class-score Linears: timm's ``head`` (and DeiT's ``head_dist``, Swin's ``head.fc``), torchvision's
    ``heads.head``."""
    names = ("head", "head_dist", "heads.head", "head.fc")
    return [m for n, m in net.named_modules() if n in names and isinstance(m, nn.Linear)]


@torch.no_grad()
def randomize(net: nn.Module, seed: int) -> nn.Module:
    """Seeded unit-gain weights, random biases, LayerNorm affines and tokens, spread heads (module doc)."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / module.in_features**0.5)
            if module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
        elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.2)
        elif isinstance(module, nn.MultiheadAttention):  # torchvision's: packed in_proj, not an nn.Linear
            module.in_proj_weight.copy_(torch.randn(module.in_proj_weight.shape, generator=gen) / module.embed_dim**0.5)
            module.in_proj_bias.copy_(torch.randn(module.in_proj_bias.shape, generator=gen) * 0.2)
    for name, param in net.named_parameters():
        if name.split(".")[-1] in ("cls_token", "dist_token", "reg_token", "pos_embed", "class_token", "pos_embedding"):
            param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    for head in _heads(net):
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * (4.0 / head.in_features) ** 0.5)
        head.bias.zero_()
    assert _heads(net), "no class head found"
    return net.eval()


def swin() -> nn.Module:
    return _swin(6)


def build(name: str) -> nn.Module:
    return CASES[name].build()


def example(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------- ViT-B/16, 224 px

VIT_B16 = {"torchvision": "vit_b_16", "timm": "vit_base_patch16_224"}  # the same architecture in each library
ATTENTION_PEAK = 8.0


def vit_b16(library: str, seed: int = 0) -> nn.Module:
    """ViT-B/16 at 224 px with 1000 classes from ``library`` ('torchvision' or 'timm'): :func:`randomize`d, and
    the last block's attention peaked (:func:`peak_last_attention`) so that its maps are well conditioned."""
    torch.manual_seed(seed)
    if library == "torchvision":
        net = zoo.torchvision().models.vit_b_16(weights=None)
    else:
        net = zoo.timm().create_model(VIT_B16[library], pretrained=False)
    randomize(net, seed)
    peak_last_attention(net)
    return net


@torch.no_grad()
def peak_last_attention(net: nn.Module, peak: float = ATTENTION_PEAK) -> None:
    """Scale the last block's query and key projections by ``peak`` (attention logits x peak squared).

    With random weights ViT-B's attention is near uniform: masking one of 196 tokens moves the logits by
    ~1e-3 against logits of ~6, so per-class min-max maps are float32 rounding (torch's own float32 maps
    differ from float64 by up to 1.0). Peaked attention, as trained ViTs have, makes the maps well
    conditioned (torch float32 vs float64: ~1e-4), so agreement to 1e-3 means something."""
    if hasattr(net, "encoder"):  # torchvision: packed in_proj of nn.MultiheadAttention
        attention = net.encoder.layers[-1].self_attention
        weight, bias = attention.in_proj_weight, attention.in_proj_bias
    else:  # timm: one qkv Linear
        weight, bias = net.blocks[-1].attn.qkv.weight, net.blocks[-1].attn.qkv.bias
    depth = weight.shape[1]
    weight[: 2 * depth] *= peak
    bias[: 2 * depth] *= peak
