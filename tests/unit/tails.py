"""Small hand-built classifier tails for the gradient tier, one per family of ops a real tail holds: x (2, 3, 6, 6)
-> a 3 x 3 convolution -> 'map' (2, 4, 6, 6), the target, -> the tail -> 'logits' (2, 5). No ReLU feeds a max pool
(its ties at 0 would make finite differences one-sided; ties are tested on their own)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from graphs import conv_node, onnx_model, onnx_node
from graphs import random_weights as _normal

BATCH, SIZE, C, CLASSES = 2, 6, 4, 5
Tail = tuple[list[onnx.NodeProto], dict[str, np.ndarray]]


def random_weights(*shape: int, seed: int = 0) -> np.ndarray:
    """Normal weights scaled by 1 / sqrt(fan-in) (a vector: unscaled), so that activations and logits stay of
    order 1 through the tail: a saturated softmax would leave gradients below float32's range."""
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (_normal(*shape, seed=seed) / np.sqrt(fan_in)).astype(np.float32)


def model(tail: Tail, outputs: tuple[str, ...] = ("logits",), opset: int = 17) -> onnx.ModelProto:
    nodes, weights = tail
    stem = [conv_node("x", "w_stem", "map", "/features/Conv", pads=[1, 1, 1, 1])]
    all_weights = {"w_stem": random_weights(C, 3, 3, 3, seed=11), **weights}
    return onnx_model([*stem, *nodes], {"x": (BATCH, 3, SIZE, SIZE)}, list(outputs), all_weights, opset)


def _head(source: str, features: int, seed: int = 12) -> Tail:
    """Flatten + a linear classifier (Gemm, transB) on ``source``."""
    nodes = [
        onnx_node("Flatten", [source], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], "/fc/Gemm", transB=1),
    ]
    return nodes, {"w_fc": random_weights(CLASSES, features, seed=seed), "b_fc": random_weights(CLASSES, seed=seed + 1)}


def _pooled(nodes: list[onnx.NodeProto], source: str, weights: dict[str, np.ndarray], channels: int = C) -> Tail:
    head, head_weights = _head("pooled", channels)
    return [*nodes, onnx_node("GlobalAveragePool", [source], ["pooled"], "/pool"), *head], {**weights, **head_weights}


def gap_linear() -> Tail:
    """ResNet's head at its last stage: the gradient reaches the map still broadcast over H, W."""
    return _pooled([], "map", {})


def bn_relu6() -> Tail:
    """BatchNorm, ReLU6 (Clip), Sigmoid, a per-channel affine (Mul, Add), then the pool."""
    nodes = [
        onnx_node("BatchNormalization", ["map", "g", "b", "m", "v"], ["bn"], "/bn", epsilon=1e-3),
        onnx_node("Clip", ["bn", "lo", "hi"], ["r6"], "/relu6"),
        onnx_node("Mul", ["r6", "scale"], ["scaled"], "/scale"),
        onnx_node("Add", ["scaled", "shift"], ["shifted"], "/shift"),
        onnx_node("Sigmoid", ["shifted"], ["s"], "/sigmoid"),
    ]
    weights = {
        "g": random_weights(C, seed=1) + 2, "b": random_weights(C, seed=2), "m": random_weights(C, seed=3),
        "v": np.abs(random_weights(C, seed=4)) + 0.5, "lo": np.array(0.0, np.float32), "hi": np.array(1.0, np.float32),
        "scale": random_weights(C, 1, 1, seed=5), "shift": random_weights(C, 1, 1, seed=6),
    }  # fmt: skip
    return _pooled(nodes, "s", weights)


def residual() -> Tail:
    """A ResNet block: 3 x 3 convolutions (one strided), a strided 1 x 1 shortcut, the sum, ReLU."""
    nodes = [
        onnx_node("Conv", ["map", "w1", "b1"], ["c1"], "/c1/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Relu", ["c1"], ["r1"], "/r1"),
        onnx_node("Conv", ["r1", "w2"], ["c2"], "/c2/Conv", pads=[1, 1, 1, 1], strides=[2, 2]),
        onnx_node("Conv", ["map", "w3"], ["c3"], "/down/Conv", strides=[2, 2]),
        onnx_node("Add", ["c2", "c3"], ["sum"], "/add"),
        onnx_node("Relu", ["sum"], ["out"], "/out"),
    ]
    weights = {"w1": random_weights(C, C, 3, 3, seed=1), "b1": random_weights(C, seed=2),
               "w2": random_weights(6, C, 3, 3, seed=3), "w3": random_weights(6, C, 1, 1, seed=4)}  # fmt: skip
    return _pooled(nodes, "out", weights, channels=6)


def grouped() -> Tail:
    """A dilated depthwise convolution, HardSwish, a grouped strided convolution with uneven pads (odd output size),
    HardSigmoid, LeakyRelu."""
    nodes = [
        onnx_node("Conv", ["map", "dw"], ["d"], "/dw/Conv", group=C, pads=[2, 2, 2, 2], dilations=[2, 2]),
        onnx_node("HardSwish", ["d"], ["hs"], "/hswish"),
        onnx_node("Conv", ["hs", "gw"], ["g"], "/gc/Conv", group=2, pads=[0, 1, 1, 0], strides=[2, 2]),
        onnx_node("HardSigmoid", ["g"], ["hsig"], "/hsig", alpha=0.3, beta=0.4),
        onnx_node("LeakyRelu", ["hsig"], ["lr"], "/leaky", alpha=0.1),
    ]
    weights = {"dw": random_weights(C, 1, 3, 3, seed=1), "gw": random_weights(6, 2, 3, 2, seed=2)}
    return _pooled(nodes, "lr", weights, channels=6)


def squeeze_excitation() -> Tail:
    """EfficientNet's block: SiLU written as x * sigmoid(x), squeeze-excitation (pool, 1 x 1 convolutions, a
    sigmoid gate multiplying the map), then the pool."""
    nodes = [
        onnx_node("Sigmoid", ["map"], ["sig"], "/act/Sigmoid"),
        onnx_node("Mul", ["map", "sig"], ["silu"], "/act/Mul"),
        onnx_node("GlobalAveragePool", ["silu"], ["squeezed"], "/se/pool"),
        onnx_node("Conv", ["squeezed", "se1", "se1b"], ["e1"], "/se/fc1/Conv"),
        onnx_node("Relu", ["e1"], ["e1r"], "/se/relu"),
        onnx_node("Conv", ["e1r", "se2", "se2b"], ["e2"], "/se/fc2/Conv"),
        onnx_node("Sigmoid", ["e2"], ["gate"], "/se/gate"),
        onnx_node("Mul", ["silu", "gate"], ["excited"], "/se/Mul"),
    ]
    weights = {"se1": random_weights(2, C, 1, 1, seed=1), "se1b": random_weights(2, seed=2),
               "se2": random_weights(C, 2, 1, 1, seed=3), "se2b": random_weights(C, seed=4)}  # fmt: skip
    return _pooled(nodes, "excited", weights)


def vgg() -> Tail:
    """VGG's head: max pools (one overlapping with padding and ceil_mode), a flatten, a two-layer MLP (MatMul and
    Add, Relu, Dropout, Gemm without transB)."""
    nodes = [
        onnx_node("MaxPool", ["map"], ["p1"], "/pool1", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4, ceil_mode=1),
        onnx_node("MaxPool", ["p1"], ["p2"], "/pool2", kernel_shape=[2, 2], strides=[1, 1]),
        onnx_node("Flatten", ["p2"], ["flat"], "/Flatten"),
        onnx_node("MatMul", ["flat", "w1"], ["h1"], "/fc1/MatMul"),
        onnx_node("Add", ["h1", "b1"], ["h1b"], "/fc1/Add"),
        onnx_node("Relu", ["h1b"], ["h1r"], "/relu"),
        onnx_node("Dropout", ["h1r"], ["h1d"], "/drop"),
        onnx_node("Gemm", ["h1d", "w2"], ["logits"], "/fc2/Gemm", alpha=0.5),
    ]
    weights = {"w1": random_weights(C * 9, 8, seed=1), "b1": random_weights(8, seed=2)}
    weights["w2"] = random_weights(8, CLASSES, seed=3)
    return nodes, weights


def average_pools() -> Tail:
    """A 3 x 3 average pool whose padding does not count, then a strided 2 x 2 one (DenseNet's transition)."""
    nodes = [
        onnx_node("AveragePool", ["map"], ["a1"], "/avg1", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0),
        onnx_node("AveragePool", ["a1"], ["a2"], "/avg2", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    head, weights = _head("a2", C * 9)
    return [*nodes, *head], weights


def dense() -> Tail:
    """DenseNet and ShuffleNet: a split of the channels, a convolution on one part, a concatenation, a channel slice,
    ReduceMean over H, W without keepdims."""
    nodes = [
        onnx_node("Split", ["map", "halves"], ["left", "right"], "/split", axis=1),
        onnx_node("Conv", ["right", "wc"], ["grown"], "/grow/Conv", pads=[1, 1, 1, 1]),
        onnx_node("Concat", ["left", "grown", "map"], ["joined"], "/cat", axis=1),
        onnx_node("Slice", ["joined", "starts", "ends", "axes"], ["kept"], "/slice"),
        onnx_node("ReduceMean", ["kept"], ["flat"], "/mean", axes=[2, 3], keepdims=0),
    ]
    head, weights = _head("pooled", 5)
    return [*nodes, *head[1:]], {**weights, "halves": np.array([1, 3]), "wc": random_weights(3, 3, 3, 3, seed=1),
        "starts": np.array([2]), "ends": np.array([7]), "axes": np.array([1])}  # fmt: skip


def transformer() -> Tail:
    """A ConvNeXt / ViT block on the tokens: channels last, LayerNorm, a linear layer, GELU (the op), self-attention
    (two activations multiplied, Softmax), the erf GELU written out, the tanh one with a cube, a mean over tokens."""
    d = C
    nodes = [
        onnx_node("Reshape", ["map", "tokens_shape"], ["rows"], "/rows"),
        onnx_node("Transpose", ["rows"], ["tok"], "/tok", perm=[0, 2, 1]),  # (B, 36, C)
        onnx_node("LayerNormalization", ["tok", "ln_g", "ln_b"], ["ln"], "/ln", axis=-1, epsilon=1e-5),
        onnx_node("MatMul", ["ln", "wq"], ["q"], "/q"),
        onnx_node("MatMul", ["ln", "wk"], ["k"], "/k"),
        onnx_node("Transpose", ["k"], ["kt"], "/kt", perm=[0, 2, 1]),
        onnx_node("MatMul", ["q", "kt"], ["scores"], "/scores"),
        onnx_node("Div", ["scores", "temperature"], ["scaled"], "/scale"),
        onnx_node("Softmax", ["scaled"], ["attn"], "/softmax", axis=-1),
        onnx_node("MatMul", ["attn", "ln"], ["mixed"], "/mix"),
        onnx_node("Gelu", ["mixed"], ["g1"], "/gelu"),
        onnx_node("Div", ["g1", "sqrt2"], ["g1s"], "/erf_gelu/Div"),
        onnx_node("Erf", ["g1s"], ["g1e"], "/erf_gelu/Erf"),
        onnx_node("Add", ["g1e", "one"], ["g1a"], "/erf_gelu/Add"),
        onnx_node("Mul", ["g1", "g1a"], ["g1m"], "/erf_gelu/Mul"),
        onnx_node("Mul", ["g1m", "half"], ["g2"], "/erf_gelu/Mul_1"),
        onnx_node("Pow", ["g2", "three"], ["cube"], "/tanh_gelu/Pow"),
        onnx_node("Mul", ["cube", "c044"], ["cube_s"], "/tanh_gelu/Mul"),
        onnx_node("Add", ["g2", "cube_s"], ["inner"], "/tanh_gelu/Add"),
        onnx_node("Tanh", ["inner"], ["th"], "/tanh_gelu/Tanh"),
        onnx_node("Mul", ["g2", "th"], ["g3"], "/tanh_gelu/Mul_1"),
        onnx_node("Add", ["g3", "tok"], ["res"], "/residual"),
        onnx_node("ReduceMean", ["res", "token_axis"], ["flat"], "/mean", keepdims=0),
    ]
    head, weights = _head("pooled", d)
    weights |= {
        "tokens_shape": np.array([0, C, -1]), "ln_g": random_weights(d, seed=1) + 1, "ln_b": random_weights(d, seed=2),
        "wq": random_weights(d, d, seed=3), "wk": random_weights(d, d, seed=4),
        "temperature": np.array(2.0, np.float32),
        "sqrt2": np.array(np.sqrt(2), np.float32), "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32),
        "three": np.array(3.0, np.float32), "c044": np.array(0.044715, np.float32), "token_axis": np.array([1]),
    }  # fmt: skip
    return [*nodes, *head[1:]], weights


def elementwise() -> Tail:
    """Quotients of two activations, square roots, exponentials, PRelu, Sub, Neg, ReduceSum, Squeeze/Unsqueeze, and a
    softmax ending the model (the gradient starts at its logits)."""
    nodes = [
        onnx_node("Mul", ["map", "map"], ["sq"], "/sq"),
        onnx_node("Add", ["sq", "one"], ["sq1"], "/sq1"),
        onnx_node("Sqrt", ["sq1"], ["root"], "/root"),
        onnx_node("Div", ["map", "root"], ["ratio"], "/ratio"),
        onnx_node("PRelu", ["ratio", "slope"], ["pr"], "/prelu"),
        onnx_node("Neg", ["pr"], ["neg"], "/neg"),
        onnx_node("Exp", ["neg"], ["ex"], "/exp"),
        onnx_node("Sub", ["ex", "pr"], ["diff"], "/diff"),
        onnx_node("ReduceSum", ["diff", "three"], ["summed"], "/sum", keepdims=1),
        onnx_node("Squeeze", ["summed", "three"], ["squeezed"], "/squeeze"),
        onnx_node("Unsqueeze", ["squeezed", "three"], ["back"], "/unsqueeze"),
        onnx_node("Flatten", ["back"], ["flat"], "/Flatten"),
        onnx_node("Gemm", ["flat", "w_fc"], ["logits"], "/fc/Gemm", transB=1),
        onnx_node("Softmax", ["logits"], ["probabilities"], "/softmax", axis=1),
    ]
    weights = {"one": np.array(1.0, np.float32), "slope": random_weights(C, 1, 1, seed=1) * 0.3,
               "three": np.array([3]), "w_fc": random_weights(CLASSES, C * SIZE, seed=2)}  # fmt: skip
    return nodes, weights


def quantised() -> Tail:
    """A quantiser pair (Q/DQ, uint8) that saturates part of the map, then a linear head (its forward values do
    not enter the backward: the reference replaces the pair by the Clip to the same range)."""
    nodes = [
        onnx_node("QuantizeLinear", ["map", "qs", "qz"], ["q"], "/q"),
        onnx_node("DequantizeLinear", ["q", "qs", "qz"], ["dq"], "/dq"),
    ]
    head, weights = _pooled(nodes, "dq", {"qs": np.array(0.01, np.float32), "qz": np.array(100, np.uint8)})
    return head, weights


def quantised_reference() -> Tail:
    """:func:`quantised` with the pair replaced by its straight-through equivalent, Clip to [-1.0, 1.55]."""
    nodes = [onnx_node("Clip", ["map", "lo", "hi"], ["dq"], "/clip")]
    return _pooled(nodes, "dq", {"lo": np.array(-1.0, np.float32), "hi": np.array(1.55, np.float32)})


TAILS: dict[str, Callable[[], onnx.ModelProto]] = {
    "gap-linear": lambda: model(gap_linear()),
    "bn-relu6": lambda: model(bn_relu6()),
    "residual": lambda: model(residual()),
    "grouped": lambda: model(grouped()),
    "squeeze-excitation": lambda: model(squeeze_excitation()),
    "vgg": lambda: model(vgg()),
    "average-pools": lambda: model(average_pools()),
    "dense": lambda: model(dense()),
    "transformer": lambda: model(transformer(), opset=20),  # the Gelu op
    "elementwise": lambda: model(elementwise(), ("probabilities",)),
}
