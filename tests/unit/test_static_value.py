"""ovxai.hook.static_value: masks built from constants and the batch size, evaluated per image."""

from __future__ import annotations

import numpy as np
from graphs import onnx_model, onnx_node

from ovxai.formats.onnx import ONNX
from ovxai.graph.view import GraphView
from ovxai.hook.static_value import static_value, uniform

TOKENS = 5


def _mask_graph(keep: np.ndarray) -> GraphView:
    """transformers 5's attention mask through the dynamo exporter: Where(Expand(keep, [B, 1, T, T]), 0, -max),
    B read from the input's shape, added to (B, 1, T, T) scores computed from the input."""
    nodes = [
        onnx_node("Shape", ["x"], ["x_shape"], "/Shape", end=1),
        onnx_node("Concat", ["x_shape", "tail"], ["mask_shape"], "/Concat", axis=0),
        onnx_node("Expand", ["keep", "mask_shape"], ["keep_all"], "/Expand"),
        onnx_node("Where", ["keep_all", "zero", "lowest"], ["mask"], "/Where"),
        onnx_node("Add", ["x", "mask"], ["scores"], "/Add"),
    ]
    weights = {
        "tail": np.array([1, TOKENS, TOKENS], np.int64),
        "keep": keep,
        "zero": np.array(0.0, np.float32),
        "lowest": np.array(np.finfo(np.float32).min, np.float32),
    }
    return ONNX.view(onnx_model(nodes, {"x": ("batch", 1, TOKENS, TOKENS)}, ["scores"], weights))


def test_an_all_pass_mask_is_one_value() -> None:
    value = static_value(_mask_graph(np.ones((1, 1, TOKENS, 1), bool)), "mask")
    assert value is not None and value.shape == (1, 1, TOKENS, TOKENS)
    assert uniform(value) and value.reshape(-1)[0] == 0.0


def test_a_causal_mask_depends_on_the_token_pair() -> None:
    causal = np.tril(np.ones((TOKENS, TOKENS), bool))[None, None]
    value = static_value(_mask_graph(causal), "mask")
    assert value is not None and not uniform(value)
    np.testing.assert_array_equal(value[0, 0] == 0.0, causal[0, 0])


def test_activations_have_no_static_value() -> None:
    assert static_value(_mask_graph(np.ones((1, 1, TOKENS, 1), bool)), "scores") is None
