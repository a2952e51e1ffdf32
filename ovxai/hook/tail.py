"""The explanatory hook's tail: the nodes from the target to the prediction that the copies run, how each
outside input is fed, and what every path asks of it (per-position ops, global pools, the final classifier)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ovxai.errors import OvxaiError
from ovxai.graph.view import GraphView, Kind, Node


@dataclass(frozen=True)
class TailPlan:
    """Everything the hook needs to copy the tail: which nodes, and how each outside input is fed."""

    target: str
    prediction: str
    nodes: list[Node]  # the tail, topologically ordered
    side_inputs: dict[str, Kind]  # inputs of tail nodes that come neither from the tail nor from T

    def positions(self, graph: GraphView) -> int:
        """N = H * W of a (B, C, H, W) target; 0 where the size is not fixed."""
        shape = graph.tensor(self.target).shape or ()
        h, w = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
        return h * w if isinstance(h, int) and isinstance(w, int) else 0


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
    return TailPlan(target, prediction, nodes, side)


# Ops whose output at a position depends only on their input at that position (and on constants).
PER_POSITION_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Mish",
    "Tanh", "Softplus", "Softsign", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Reciprocal", "Abs", "Neg", "Clip",
    "Identity", "Cast", "Dropout", "Floor", "Ceil", "Round", "Sign", "BatchNormalization",
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "FakeQuantize", "QuantizeLinear", "DequantizeLinear",
})  # fmt: skip


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
    if not is_stored(graph, node.inputs[1]) or (bias_node and len(graph.consumers.get(node.outputs[0], [])) != 1):
        return None  # a quantised weight, or a product that something besides its bias reads
    classes = weight[0] if node.transpose_b else weight[1]
    if (
        bias is not None
        and math.prod(d if isinstance(d, int) else 0 for d in graph.tensor(bias).shape or (0,)) != classes
    ):
        return None
    return Classifier(node, bias, classes, bias_node)  # type: ignore[arg-type]


def is_stored(graph: GraphView, name: str) -> bool:
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
