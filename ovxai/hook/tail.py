"""The plan of the explanatory hook's tail: which nodes the copies run, how each outside input is fed, and
the exact shortcut past the mosaic where the tail allows one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ovxai.errors import OvxaiError
from ovxai.graph.view import SHAPE_OPS, GraphView, Kind, Node


@dataclass(frozen=True)
class Shortcut:
    """The exact shortcut past the mosaic: where the tail can be evaluated without the (B*N, C, H, W) copies.

    With a one-hot mask, copy n is T's column n at position n and zeros elsewhere. Ops that act
    position by position (``positionwise``: 1 x 1 convolutions, BatchNorm, activations, per-channel
    affine ops) keep that shape: column n becomes U's column n, where U is the original path's own
    tensor (``source``), and every other position holds the same background vector z (their response
    to a zero column). The ``boundary`` that follows is evaluated in closed form per copy:

    * ``mean`` (a global average pool): (U[:, n] + (N - 1) z) / N;
    * ``linear`` (``flatten`` then a product with a constant weight W, rows = positions' features):
      W (flat z) + b + W_n (U[:, n] - z), from the per-position products W_n U[:, n], which also give the
      original path's product (their sum over n): the hook replaces it, so W is stored once, re-laid.

    With the 3 x 3 Gaussian mask the same holds with up to nine scaled columns per copy. An empty
    ``positionwise`` with a ``mean`` boundary is the classic GAP fast path (z = 0, U = T).
    """

    positionwise: tuple[Node, ...]
    source: str
    boundary: Node
    kind: Literal["mean", "linear"]
    keepdims: bool = True
    flatten: Node | None = None
    after: tuple[Node, ...] = ()  # per-position ops right after a mean pool (a quantiser before an INT8 layer)
    homogeneous: bool = False  # the positionwise ops commute with scaling, f(s x) = s f(x) for s > 0: z = 0

    @property
    def replaced(self) -> set[str]:
        """Names of the tail nodes the shortcut computes (they are not copied)."""
        nodes = (*self.positionwise, self.boundary, *([self.flatten] if self.flatten else []), *self.after)
        return {n.name for n in nodes}

    @property
    def output(self) -> str:
        """The tail tensor whose counterpart the shortcut computes for all copies."""
        return (self.after[-1] if self.after else self.boundary).outputs[0]


@dataclass(frozen=True)
class TailPlan:
    """Everything the hook needs to copy the tail: which nodes, and how each outside input is fed."""

    target: str
    prediction: str
    nodes: list[Node]  # the tail, topologically ordered
    side_inputs: dict[str, Kind]  # inputs of tail nodes that come neither from the tail nor from T
    shortcut: Shortcut | None  # set when the tail can skip the mosaic exactly


def plan_tail(graph: GraphView, target: str, prediction: str) -> TailPlan:
    """Find the nodes between ``target`` and ``prediction`` and classify their outside inputs."""
    between = graph.descendants(target) & graph.ancestors([prediction])
    if not between:
        raise OvxaiError(
            f"target tensor '{target}' does not feed the prediction output '{prediction}'",
            "pick a layer before the classifier head (see `ovxai inspect`)",
        )
    nodes = [n for n in graph.nodes if n.name in between]
    for node in nodes:
        if node.has_subgraph:
            raise OvxaiError(
                f"node '{node.name}' ({node.op}) after the target holds a subgraph, which the hook cannot copy",
                "pick a target after it",
            )
    produced = {o for n in nodes for o in n.outputs}
    side: dict[str, Kind] = {}
    for node in nodes:
        for i in node.inputs:
            if i and i != target and i not in produced:
                side[i] = graph.kind.get(i, Kind.CONSTANT)
    for name, kind in side.items():
        if kind is Kind.ACTIVATION and graph.tensor(name).rank is None:
            raise OvxaiError(
                f"the tail reads '{name}' from before the target, and its rank is unknown",
                "give the input shape with --input-shape",
            )
    return TailPlan(target, prediction, nodes, side, _shortcut(graph, target, nodes))


# Ops whose output at a position depends only on their input at that position (and on constants).
PER_POSITION_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Mish",
    "Tanh", "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Clip",
    "Identity", "Cast", "Dropout", "Floor", "Ceil", "Round", "Sign", "BatchNormalization",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "FakeQuantize", "QuantizeLinear", "DequantizeLinear",
})  # fmt: skip


def _shortcut(graph: GraphView, target: str, tail: list[Node]) -> Shortcut | None:
    """The exact shortcut for this tail, if its first spatial work is a global pool or a flatten + product."""
    region = {target}  # tensors that are position-by-position functions of T
    positionwise: list[Node] = []
    for node in tail:
        reads = [i for i in node.inputs if i in region]
        if reads and acts_per_position(graph, node, region):
            positionwise.append(node)
            region.update(node.outputs)
    inside = {n.name for n in positionwise}
    boundary = [
        n for n in tail if n.name not in inside and n.op not in SHAPE_OPS and any(i in region for i in n.inputs)
    ]
    if len(boundary) != 1 or boundary[0].inputs[0] not in region:
        return None
    node, source = boundary[0], boundary[0].inputs[0]
    used = _feeding(graph, source, positionwise)
    keepdims = global_pool_keepdims(graph, node)
    if keepdims is not None:
        return Shortcut(used, source, node, "mean", keepdims, after=_after_pool(graph, node, tail) if keepdims else ())
    product = _linear_after_flatten(graph, node, tail)
    if product is not None:
        homogeneous = all(_homogeneous(graph, n) for n in used)
        return Shortcut(used, source, product, "linear", flatten=node, homogeneous=homogeneous)
    return None


# Per-position ops with f(s x) = s f(x) for s > 0 whatever their constants (a 1 x 1 pool is the identity).
_HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu", "PRelu", "Identity", "Dropout", "MaxPool", "AveragePool"})


def _homogeneous(graph: GraphView, node: Node) -> bool:
    """Whether a positionwise op commutes with a positive scale (so it maps a zero column to zero)."""
    if node.op == "Conv":
        return len(node.inputs) < 3 or not node.inputs[2]  # no bias
    if node.op in ("Mul", "Div"):
        return is_constant(graph, node.inputs[1])  # by a constant
    return node.op in _HOMOGENEOUS_OPS


def _after_pool(graph: GraphView, pool: Node, tail: list[Node]) -> tuple[Node, ...]:
    """The chain of per-position ops that reads a (B, C, 1, 1) pool's output, one reader after another.

    The hook runs them on the pooled values laid out as a (B, C, H, W) map, before turning the
    copies into rows: engines run such ops (a FakeQuantize) far faster on a map than on B*N 1 x 1 rows."""
    in_tail = {n.name for n in tail}
    chain: list[Node] = []
    current = pool.outputs[0]
    while True:
        readers = [r for r in graph.consumers.get(current, []) if r.name in in_tail and r.op not in SHAPE_OPS]
        if len(readers) != 1 or readers[0].inputs[0] != current or not acts_per_position(graph, readers[0], {current}):
            return tuple(chain)
        chain.append(readers[0])
        current = readers[0].outputs[0]


def acts_per_position(graph: GraphView, node: Node, region: set[str]) -> bool:
    if graph.tensor(node.outputs[0]).rank != 4:
        return False
    if node.op in ("Conv", "AveragePool", "MaxPool"):
        return node.pointwise and node.inputs[0] in region and all(is_constant(graph, i) for i in node.inputs[1:])
    if node.op not in PER_POSITION_OPS:
        return False
    # Other inputs: constants the same at every position (no spatial extent), or region tensors.
    return all(not i or i in region or (is_constant(graph, i) and _flat_in_space(graph, i)) for i in node.inputs)


def is_constant(graph: GraphView, name: str) -> bool:
    return not name or graph.kind.get(name, Kind.CONSTANT) is Kind.CONSTANT


def _flat_in_space(graph: GraphView, name: str) -> bool:
    """A constant that broadcasts to (B, C, H, W) with size 1 on H and W (or has fewer than 2 dimensions)."""
    shape = graph.tensor(name).shape
    return shape is not None and (len(shape) < 2 or tuple(shape[-2:]) == (1, 1))


def _feeding(graph: GraphView, source: str, positionwise: list[Node]) -> tuple[Node, ...]:
    """The positionwise nodes that ``source`` depends on (others only feed shape reads)."""
    needed = graph.ancestors([source])
    return tuple(n for n in positionwise if n.name in needed)


def _linear_after_flatten(graph: GraphView, node: Node, tail: list[Node]) -> Node | None:
    """The product that reads ``node``'s output, when ``node`` flattens a static (B, C, H, W) map to (B, C*H*W)."""
    before, after = graph.tensor(node.inputs[0]).shape, graph.tensor(node.outputs[0]).shape
    if node.op not in ("Flatten", "Reshape") or before is None or after is None or len(after) != 2:
        return None
    if not all(isinstance(d, int) for d in (*before[1:], after[1])) or after[1] != before[1] * before[2] * before[3]:  # type: ignore[operator]
        return None
    in_tail = {n.name for n in tail}
    readers = [r for r in graph.consumers.get(node.outputs[0], []) if r.name in in_tail]
    if len(readers) != 1 or readers[0].op not in ("Gemm", "MatMul") or not readers[0].plain_product:
        return None
    product = readers[0]
    if product.inputs[0] != node.outputs[0] or not all(is_constant(graph, i) for i in product.inputs[1:]):
        return None
    weight = graph.tensor(product.inputs[1]).shape
    if weight is None or len(weight) != 2 or not all(isinstance(d, int) for d in weight):
        return None
    if not _stored(graph, product.inputs[1]):
        # A compressed weight (INT8/INT4 weight-only, dequantised in the graph) runs in the engine's own kernel,
        # which may quantise the activations too: the re-laid products would not be the same sums reordered.
        return None
    # Any size: the hook computes the original product from the per-position one too, so the file (and the
    # engine) holds only the re-laid weight (N, C', K), never a second copy.
    return product


@dataclass(frozen=True)
class Classifier:
    """The tail's last product, rows (B*N, D) @ a constant weight (+ a constant bias): the class logits.

    Where only some classes get a map and each class's score needs only its own logit (logits, sigmoid),
    the copies run only those classes' rows of the weight (``nodes`` are then not copied)."""

    product: Node
    bias: str | None  # a constant with one value per class
    classes: int

    @property
    def nodes(self) -> set[str]:
        return {self.product.name} | ({self.bias_node} if self.bias_node else set())

    bias_node: str = ""  # the Add of the bias, when it is a node of its own (OpenVINO: MatMul, then Add)


def tail_logits(graph: GraphView, plan: TailPlan) -> str:
    """The tail's class logits: the prediction, or the input of the Softmax / Sigmoid that ends the tail
    (scoring probabilities again would flatten the map)."""
    final = graph.producer.get(plan.prediction)
    if final is not None and final.op in ("Softmax", "Sigmoid") and final in plan.nodes:
        return final.inputs[0]
    return plan.prediction


def final_classifier(graph: GraphView, tail: list[Node], logits: str) -> Classifier | None:
    """The classifier that computes ``logits`` from (B, D) rows, if it is a plain product with a stored weight."""
    node = graph.producer.get(logits)
    in_tail = {n.name for n in tail}
    if node is None or node.name not in in_tail:
        return None
    bias, bias_node = None, ""
    if node.op == "Add":
        product = next((graph.producer.get(i) for i in node.inputs if graph.kind.get(i) is Kind.ACTIVATION), None)
        others = [i for i in node.inputs if product is None or i not in product.outputs]
        if product is None or len(others) != 1 or not is_constant(graph, others[0]):
            return None
        bias, bias_node, node = others[0], node.name, product
    if node.op not in ("Gemm", "MatMul") or not node.plain_product or node.name not in in_tail:
        return None
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
        if bias is not None:
            return None
        bias = node.inputs[2]
    weight = graph.tensor(node.inputs[1]).shape
    rows = graph.tensor(node.inputs[0]).rank
    if weight is None or len(weight) != 2 or not all(isinstance(d, int) for d in weight) or rows != 2:
        return None
    if not _stored(graph, node.inputs[1]) or (bias_node and len(graph.consumers.get(node.outputs[0], [])) != 1):
        return None  # a quantised weight, or a product that something besides its bias reads
    classes = weight[0] if node.transpose_b else weight[1]
    if (
        bias is not None
        and math.prod(d if isinstance(d, int) else 0 for d in graph.tensor(bias).shape or (0,)) != classes
    ):
        return None
    return Classifier(node, bias, classes, bias_node)  # type: ignore[arg-type]


def _stored(graph: GraphView, name: str) -> bool:
    """A weight stored as is (or in FP16 and converted): not quantised, which an engine runs in its own kernels."""
    producer = graph.producer.get(name)
    return name in graph.constants or (
        producer is not None and producer.op == "Cast" and producer.inputs[0] in graph.constants
    )


def global_pool_keepdims(graph: GraphView, node: Node) -> bool | None:
    """Whether a node that averages a 4-D map over exactly H and W keeps those axes; None if it does not."""
    if graph.tensor(node.inputs[0]).rank != 4:
        return None
    if node.op == "GlobalAveragePool" or (node.op == "AveragePool" and node.whole_window):
        return True
    if node.op == "ReduceMean" and node.axes == (2, 3):
        return node.keepdims
    return None
