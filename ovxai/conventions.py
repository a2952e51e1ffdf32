"""Names and allowed values shared by the exporter and the runtime.

Both sides of the product meet in the exported file: the exporter writes these output names and
metadata keys, the runtime reads them back. Keeping them here (no onnx, no torch, no engine import)
lets ``ovxai.runtime`` depend on the conventions without depending on the exporter.
"""

from __future__ import annotations

from typing import Literal, get_args

Score = Literal["softmax", "logits", "sigmoid"]
"""How each masked copy's class scores become the map's values: the reference uses softmax."""
Mask = Literal["onehot", "gaussian"]
"""One position per copy, or the 3x3 kernel [[1,2,1],[2,4,2],[1,2,1]]/16 around it."""
SaliencyDType = Literal["float32", "uint8"]
"""Maps in [0, 1], or quantised to 0..255."""
ChannelOrder = Literal["rgb", "bgr"]
"""The colour order the network expects its input in."""

SCORES: tuple[Score, ...] = get_args(Score)
MASKS: tuple[Mask, ...] = get_args(Mask)
SALIENCY_DTYPES: tuple[SaliencyDType, ...] = get_args(SaliencyDType)
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)

SALIENCY_OUTPUT = "saliency_map"
"""(B, K, H, W) maps, one per image and class."""
FEATURE_OUTPUT = "feature_vector"
"""(B, C) pooled features of the original path, the name OpenVINO's Model API reads."""
HOOK_OUTPUTS = (SALIENCY_OUTPUT, FEATURE_OUTPUT)

NODE_PREFIX = "ovxai/"
"""Every node and tensor the hook adds is named under this prefix."""

MODEL_INFO_SECTION = "model_info"
"""OpenVINO Model API's metadata section (rt_info of an IR, ``metadata_props`` of an ONNX model)."""
OVXAI_SECTION = "ovxai"
"""ovxai's own metadata section: what Model API has no key for."""


def one_of(value: object, allowed: tuple[str, ...], what: str) -> str | None:
    """None when ``value`` is allowed, else the problem in words (for an error naming the parameter)."""
    if value in allowed:
        return None
    return f"unknown {what} {value!r}; use one of: {', '.join(allowed)}"
