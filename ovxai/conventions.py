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
HookPath = Literal["auto", "mean", "linear", "windows", "tokens", "mosaic"]
"""How the masked copies are computed: ``auto`` takes the first exact path that applies (``ovxai inspect`` lists
each with why it does or does not); ``mosaic`` is the general path, every copy on the whole map or sequence."""
Method = Literal["recipro", "gradcam", "gradcam++", "xgradcam", "layercam", "integrated-gradcam"]
"""What the hook computes: Recipro-CAM (masked copies, no gradient), or a gradient CAM whose backward through the
tail is emitted into the graph (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, Integrated Grad-CAM)."""
GRADIENT_METHODS: tuple[Method, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "integrated-gradcam")
ChannelOrder = Literal["rgb", "bgr"]
"""The colour order the network expects its input in."""

SCORES: tuple[Score, ...] = get_args(Score)
MASKS: tuple[Mask, ...] = get_args(Mask)
SALIENCY_DTYPES: tuple[SaliencyDType, ...] = get_args(SaliencyDType)
HOOK_PATHS: tuple[HookPath, ...] = get_args(HookPath)
METHODS: tuple[Method, ...] = get_args(Method)
CHANNEL_ORDERS: tuple[ChannelOrder, ...] = get_args(ChannelOrder)

SALIENCY_OUTPUT = "saliency_map"
"""(B, K, H, W) maps, one per image and class."""
FEATURE_OUTPUT = "feature_vector"
"""(B, C) pooled features of the original path, the name OpenVINO's Model API reads."""
CLASSES_OUTPUT = "saliency_classes"
"""(B, K') int64: the class of each map, when the model maps only some classes (``explain`` not 'all')."""
HOOK_OUTPUTS = (SALIENCY_OUTPUT, FEATURE_OUTPUT, CLASSES_OUTPUT)

NODE_PREFIX = "ovxai/"
"""Every node and tensor the hook adds is named under this prefix."""

MODEL_INFO_SECTION = "model_info"
"""OpenVINO Model API's metadata section (rt_info of an IR, ``metadata_props`` of an ONNX model)."""
OVXAI_SECTION = "ovxai"
"""ovxai's own metadata section: what Model API has no key for."""


def parse_explained(spec: str) -> int | tuple[int, ...] | None:
    """Which classes a model maps: 'all' -> None, 'topK' -> K (the K best of each image's own prediction),
    'ID,ID,...' -> those class ids. ValueError with the reason for anything else."""
    text = spec.strip().lower()
    if text == "all":
        return None
    if text.startswith("top"):
        if not text[3:].isdigit() or int(text[3:]) < 1:
            raise ValueError(f"'{spec}' is not topK with K >= 1")
        return int(text[3:])
    try:
        ids = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"'{spec}' is not 'all', 'topK' or class ids like 281,285") from None
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"'{spec}' has a negative or repeated class id")
    return ids
