"""Ops a graph writes out that engines fuse back into one, seen by the backward as that one op.

An engine fuses a chain of ops only through tensors that have one reader; a backward rule that read a tensor inside
the chain would stop the fusion and move the prediction by rounding (and a recomputed copy of the chain would be
merged back into it by common-subexpression elimination). Each pattern here is replaced, in the backward's node
list, by the one op it computes, whose rule reads only the chain's input.

* erf GELU, as torch's exporters write ``nn.GELU`` before opset 20 (ONNX Runtime and OpenVINO fuse it into their
  GELU kernel): y = x * (erf(x / sqrt 2) + 1) * 1/2, the products in either operand order, the 1/2 applied last or
  to x first, the division also written as a product by 1 / sqrt 2.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ovxai.graph.view import GraphView, Node


def fused(graph: GraphView, nodes: list[Node]) -> list[Node]:
    """``nodes`` (topologically ordered) with each written-out GELU among them replaced by one Gelu node."""
    names = {n.name for n in nodes}
    replacing: dict[str, Node] = {}  # the pattern's last node -> the Gelu that replaces it
    dropped: set[str] = set()
    for erf in nodes:
        match = _erf_gelu(graph, erf) if erf.op == "Erf" else None
        if match is None or not {n.name for n in match[1]} <= names:
            continue
        gelu, chain = match
        replacing[chain[-1].name] = gelu
        dropped.update(n.name for n in chain[:-1])
    return [replacing.get(n.name, n) for n in nodes if n.name not in dropped]


def _constant(graph: GraphView, name: str) -> float | None:
    value = graph.values.get(name)
    return None if value is None or np.asarray(value).size != 1 else float(np.asarray(value).reshape(-1)[0])


def _other(node: Node, name: str) -> str | None:
    """The other input of a binary node that reads ``name``."""
    if len(node.inputs) != 2 or name not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def _only_reader(graph: GraphView, name: str, op: str) -> Node | None:
    readers = graph.consumers.get(name, [])
    return readers[0] if len(readers) == 1 and readers[0].op == op and name not in graph.outputs else None


def _near(value: float | None, want: float) -> bool:
    return value is not None and math.isclose(value, want, rel_tol=1e-5)


def _erf_gelu(graph: GraphView, erf: Node) -> tuple[Node, list[Node]] | None:
    """The written-out erf GELU around ``erf``: the Gelu node and the chain it replaces, in order."""
    scale = graph.producer.get(erf.inputs[0])
    if scale is None or _only_reader(graph, scale.outputs[0], "Erf") is None:
        return None
    x = scale.inputs[0]
    if scale.op == "Div":
        ok = _near(_constant(graph, scale.inputs[1]), math.sqrt(2))
    elif scale.op == "Mul":
        x = next((i for i in scale.inputs if _constant(graph, i) is None), "")
        ok = _near(_constant(graph, _other(scale, x) or ""), 1 / math.sqrt(2))
    else:
        ok = False
    add = _only_reader(graph, erf.outputs[0], "Add")
    if not ok or not x or add is None or not _near(_constant(graph, _other(add, erf.outputs[0]) or ""), 1.0):
        return None
    product = _only_reader(graph, add.outputs[0], "Mul")
    if product is None:
        return None
    factor = _other(product, add.outputs[0]) or ""
    chain = [scale, erf, add, product]
    if factor == x:  # x (erf + 1), then * 1/2
        half = _only_reader(graph, product.outputs[0], "Mul")
        if half is None or not _near(_constant(graph, _other(half, product.outputs[0]) or ""), 0.5):
            return None
        chain.append(half)
    else:  # (x / 2)(erf + 1)
        halved = graph.producer.get(factor)
        if halved is None or halved.op != "Mul" or x not in halved.inputs:
            return None
        if not _near(_constant(graph, _other(halved, x) or ""), 0.5) or len(graph.consumers.get(factor, [])) != 1:
            return None
        chain.insert(0, halved)
    last = chain[-1]
    gelu = replace(last, name=f"{erf.name}/gelu", op="Gelu", inputs=(x,), outputs=last.outputs, approximate=False,
                   handle=None)  # fmt: skip
    return gelu, chain
