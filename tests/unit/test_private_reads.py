"""The private copies the hook reads (ovxai.hook.private_reads), on a hand-built residual block (no torch)."""

from __future__ import annotations

from graphs import onnx_model, random_weights
from onnx import helper

from ovxai.formats.onnx import ONNX
from ovxai.hook.private_reads import private_chain


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
