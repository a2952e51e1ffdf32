"""The private copies the hook reads (ovxai.hook.private_reads), on a hand-built residual block (no torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from graphs import onnx_model, random_weights
from onnx import helper

from ovxai.formats.onnx import ONNX, initializers, reference_runner
from ovxai.graph.numpy_ops import NumpyBuilder, evaluate
from ovxai.hook.private_reads import PrivateReads, private_chain


def test_private_chain_copies_a_residual_block_back_to_its_convolutions() -> None:
    """relu(conv1(a) + bias + skip), skip = conv0(x): the chain is both convolutions (each widened by one output
    channel), both adds and the ReLU. The residual operand is recomputed, not read: a second reader of it would
    keep the engine from summing into it in place. What the convolutions read (x, a) is read as it is."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["skip"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["skip"], ["a"]),
        helper.make_node("Conv", ["a", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "b"], ["biased"]),
        helper.make_node("Add", ["biased", "skip"], ["summed"]),
        helper.make_node("Relu", ["summed"], ["t"]),
        helper.make_node("GlobalAveragePool", ["t"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    weights = {
        "w0": random_weights(4, 3, 3, 3),
        "w1": random_weights(4, 4, 3, 3),
        "b": random_weights(1, 4, 1, 1),
        "fc": random_weights(4, 5),
    }
    graph = ONNX.view(onnx_model(nodes, {"x": ["batch", 3, 8, 8]}, ["logits"], weights))
    chain, widened = private_chain(graph, "t")
    assert [n.outputs[0] for n in chain] == ["skip", "c", "biased", "summed", "t"]
    convs = {graph.producer["skip"].name, graph.producer["c"].name}
    assert set(widened) == convs and all(w.padded == {1: 0} and w.channels == 4 for w in widened.values())


def test_private_copies_compute_the_originals_values_and_widen_a_dequantised_weight_where_stored() -> None:
    """Through numpy: the copy of a residual block's output equals the original's, and a weight dequantised in the
    graph (int8 -> Cast -> Mul by a per-channel scale, NNCF's spelling) is widened at its stored integers and its
    scale, so that the engine still runs the copied convolution as a quantised one."""
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["skip"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["skip"], ["a"]),
        helper.make_node("Cast", ["w1_int8"], ["w1_float"], to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", ["w1_float", "w1_scale"], ["w1"]),
        helper.make_node("Conv", ["a", "w1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "skip"], ["summed"]),
        helper.make_node("Relu", ["summed"], ["t"]),
        helper.make_node("GlobalAveragePool", ["t"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc"], ["logits"]),
    ]
    rng = np.random.default_rng(0)
    weights = {"w0": random_weights(4, 3, 3, 3), "fc": random_weights(4, 5)}
    weights |= {"w1_int8": rng.integers(-127, 128, (4, 4, 3, 3)).astype(np.int8)}
    weights |= {"w1_scale": rng.random((4, 1, 1, 1)).astype(np.float32) / 64}
    model = onnx_model(nodes, {"x": ["batch", 3, 8, 8]}, ["logits"], weights)
    graph = ONNX.view(model)
    run = reference_runner(model)
    values = evaluate(graph, {"x": random_weights(2, 3, 8, 8, seed=3)}, initializers(model), run)
    made: list[tuple[str, tuple[int, ...], str]] = []

    class Recording(NumpyBuilder):
        def node(self, op: str, inputs: Any, outputs: int = 1, **attrs: Any) -> list[np.ndarray]:
            made.append((op, tuple(np.shape(inputs[0])), str(np.asarray(inputs[0]).dtype)))
            return super().node(op, inputs, outputs, **attrs)

    private = PrivateReads(Recording(graph, values, run), graph)
    np.testing.assert_array_equal(private.tensor("t"), values["t"])
    assert private.tensor("x") is values["x"] and private.tensor("fc") is values["fc"]  # inputs, weights: as they are
    # the int8 weight and its scale each get a zero slice (5 output channels), before the dequantisation
    assert ("Concat", (4, 4, 3, 3), "int8") in made and ("Concat", (4, 1, 1, 1), "float32") in made
    assert ("Concat", (4, 4, 3, 3), "float32") not in made
