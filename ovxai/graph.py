"""A format-neutral view of a model graph, and the plan of the explanatory hook's tail.

Both graph formats (ONNX, OpenVINO) are read into :class:`GraphView`; everything that decides
*what* the hook copies and *how* each input of the copied tail is fed lives here, once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal

import numpy as np

from ovxai.errors import OvxaiError

Dim = int | str | None
"""A dimension: a number, a symbolic name, or unknown."""

# Ops after which a tensor's axes no longer follow the image's (see GraphView._spatial_axes).
_LAYOUT_BREAKERS = frozenset({"Flatten", "Gemm", "Einsum", "Squeeze", "Unsqueeze", "Gather", "Shape", "Size"})
_REDUCTIONS = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceProd"})

# Quantisation steps: they belong to the module of the tensor they quantise.
QUANTIZERS = frozenset({"FakeQuantize", "QuantizeLinear", "DequantizeLinear"})

# Ops that read only the *shape* of their input: their output depends on the batch size, not on data.
SHAPE_OPS = frozenset({"Shape", "Size"})


def scope_from_name(name: str) -> str:
    """The PyTorch module path in a node name, from the naming of each PyTorch-to-graph path.

    - torch.onnx (TorchScript) node names: '/layer4/layer4.1/relu/Relu' -> 'layer4.1.relu'; segments are
      full paths ('layer4.1') or local names ('relu'), the last one is the op's own name. OpenVINO keeps
      them as friendly names when it converts such an ONNX model.
    - ``ov.convert_model(module)`` (TorchScript-based): '__module.layer4.2.relu/aten::relu/Relu_2'
      -> 'layer4.2.relu'; NNCF names a quantizer after its input ('.../Relu_2/fq_output_0').
    """
    if name.startswith("__module."):
        return name.split("/", 1)[0].removeprefix("__module.")
    if not name.startswith("/"):
        return ""
    path, previous = "", ""
    for segment in name.split("/")[1:-1]:
        if not path or segment.startswith(path + "."):  # a full path: 'layer4' then 'layer4.1'
            path = segment
        elif previous and segment.startswith(previous + ".") and path.endswith(previous):
            path = path[: len(path) - len(previous)] + segment  # a nested container's item: 'blocks' then 'blocks.0'
        else:
            path = f"{path}.{segment}"
        previous = segment
    return path


def _common_scope(scopes: list[str]) -> str:
    """The deepest module path that contains all of ``scopes`` ('' if none)."""
    parts = [s.split(".") for s in scopes]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


@dataclass(frozen=True)
class Sliding:
    """How a 2-D convolution's kernel slides: output position o reads inputs o * stride - pad + t * dilation,
    t = 0 .. kernel - 1, per axis (pads at the start; 'SAME' padding already resolved by the adapter)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]
    dilations: tuple[int, int]


@dataclass(frozen=True)
class Node:
    """One operation, as the planner sees it whatever the format.

    ``op`` is the ONNX operator name (format adapters map their own names at the view's edge, e.g.
    OpenVINO's ShapeOf -> Shape, Convolution -> Conv); the typed fields below are the only operator
    attributes the planner, the target resolver and the cost estimate read, filled by the adapter.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    scope: str = ""  # PyTorch module path ('' for the root, or unknown)
    scoped: bool = False  # the name or metadata placed the node in the module tree ('' then means the root)
    has_subgraph: bool = False  # If / Loop / Scan: the hook cannot copy it
    axes: tuple[int, ...] | None = None  # ReduceMean: the reduced axes, non-negative
    keepdims: bool = True  # ReduceMean
    perm: tuple[int, ...] | None = None  # Transpose
    whole_window: bool = False  # AveragePool whose window is the whole H x W, no padding
    start: int = 0  # Shape: the first dimension it reads (negative: from the end)
    weight_inner: tuple[Dim, ...] | None = None  # Conv / MatMul / Gemm: weight dims summed per output value
    levels: int = 0  # FakeQuantize: the number of quantisation levels
    pointwise: bool = False  # Conv whose kernel is 1 x 1 with stride 1 and no padding: it acts per position
    transpose_b: bool = False  # Gemm (transB) / MatMul: the weight is stored (K, C) rather than (C, K)
    plain_product: bool = False  # Gemm / MatMul that is x @ W (+ bias): no transposed x, alpha 1, beta 1
    sliding: Sliding | None = None  # 2-D Conv (grouped too): how its kernel slides over the input
    handle: Any = field(default=None, compare=False, hash=False, repr=False)  # the format's own node


@dataclass(frozen=True)
class Tensor:
    """What the planner needs to know about a tensor."""

    name: str
    shape: tuple[Dim, ...] | None
    dtype: str | None  # numpy name: 'float32', 'int64', ...

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype is not None and self.dtype.startswith(("float", "bfloat"))

    def describe(self) -> str:
        if self.shape is None:
            return "?"
        return "x".join("?" if d is None else str(d) for d in self.shape)


class Kind(Enum):
    """How a tensor depends on the model's input."""

    CONSTANT = 0  # weights and anything computed from weights only
    SHAPE = 1  # computed from the *shape* of an activation (batch size, spatial size)
    ACTIVATION = 2  # computed from the input's data


@dataclass
class GraphView:
    """Nodes in topological order plus tensor facts; built by a format adapter."""

    nodes: list[Node]
    tensors: dict[str, Tensor]
    inputs: list[str]  # graph inputs that are fed at run time (not weights)
    outputs: list[str]
    constants: set[str]  # tensors with a fixed value (initializers, Constant outputs)
    aliases: dict[str, str] = field(default_factory=dict)  # other names a tensor is known by
    values: dict[str, np.ndarray] = field(default_factory=dict)  # small constants' values (shapes, axes)

    def __post_init__(self) -> None:
        self.nodes = _inherited_scopes(self.nodes)
        self.producer: dict[str, Node] = {o: n for n in self.nodes for o in n.outputs}
        self.consumers: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    self.consumers.setdefault(i, []).append(n)
        self.kind = self._kinds()
        self.spatial_axes = self._spatial_axes()

    def tensor(self, name: str) -> Tensor:
        return self.tensors.get(name) or Tensor(name, None, None)

    def image_input(self) -> str:
        """The one input fed with images: the only 4-D one, or the only one."""
        images = [i for i in self.inputs if self.tensor(i).rank == 4] or self.inputs
        if len(images) != 1:
            raise OvxaiError(
                f"expected one image input, found {len(self.inputs)} inputs ({', '.join(self.inputs)})",
                "export a single-input image classifier",
            )
        return images[0]

    def input_dims(self) -> list[Dim]:
        """The image input's dimensions (None where unknown)."""
        return list(self.tensor(self.image_input()).shape or ())

    def _kinds(self) -> dict[str, Kind]:
        kind = {name: Kind.ACTIVATION for name in self.inputs}
        kind.update({name: Kind.CONSTANT for name in self.constants})
        for node in self.nodes:
            ins = [kind.get(i, Kind.CONSTANT) for i in node.inputs if i]
            worst = max(ins, key=lambda k: k.value, default=Kind.CONSTANT)
            if node.op in SHAPE_OPS and worst is Kind.ACTIVATION:
                worst = Kind.SHAPE
            for o in node.outputs:
                kind[o] = worst
        return kind

    def _spatial_axes(self) -> dict[str, tuple[int, int]]:
        """Which axes of each activation are the image's height and width, carried through the network.

        The image input is NCHW. Ops that keep the layout keep the axes; a Transpose moves them; a
        Reshape keeps them only when it leaves the trailing H, W untouched (a channel shuffle); a pool
        or reduction over them, a flatten, a product of two activations (attention) ends them. So a
        (B, heads, T, T) attention tensor or a permuted (B, 1, 1, C) pooled vector is never a "map".
        """
        axes: dict[str, tuple[int, int]] = {}
        image = [i for i in self.inputs if self.tensor(i).rank == 4]
        if len(image) == 1:
            axes[image[0]] = (2, 3)
        for node in self.nodes:
            data = [i for i in node.inputs if i and i in axes]
            if not data or node.op in _LAYOUT_BREAKERS:
                continue
            source = axes[data[0]]
            rank_in = self.tensor(data[0]).rank
            for out in node.outputs:
                moved = self._moved_axes(node, source, rank_in, self.tensor(out).rank)
                if moved is not None:
                    axes[out] = moved
        return axes

    def _moved_axes(
        self, node: Node, axes: tuple[int, int], rank_in: int | None, rank_out: int | None
    ) -> tuple[int, int] | None:
        if node.op == "Transpose":
            return None if node.perm is None else (node.perm.index(axes[0]), node.perm.index(axes[1]))
        if node.op == "Reshape":
            shape_in, shape_out = self.tensor(node.inputs[0]).shape, self.tensor(node.outputs[0]).shape
            if (
                rank_in is None
                or rank_out is None
                or axes != (rank_in - 2, rank_in - 1)
                or not shape_in
                or not shape_out
            ):
                return None
            trailing = shape_in[-2:]
            keeps = all(d is not None for d in trailing) and tuple(shape_out[-2:]) == tuple(trailing)
            return (rank_out - 2, rank_out - 1) if keeps else None
        if node.op in _REDUCTIONS and (node.axes is None or set(axes) & set(node.axes)):
            return None
        if node.op == "MatMul" and (
            (rank_in is not None and rank_in - 1 in axes) or self.kind.get(node.inputs[1]) is not Kind.CONSTANT
        ):
            return None  # a product over a spatial axis, or of two activations (attention)
        if node.op == "GlobalAveragePool" or node.op == "GlobalMaxPool":
            return None
        return axes if rank_out == rank_in else None

    def ancestors(self, names: list[str]) -> set[str]:
        """Names of all nodes that the given tensors depend on."""
        seen: set[str] = set()
        todo = deque(names)
        while todo:
            node = self.producer.get(todo.popleft())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            todo.extend(i for i in node.inputs if i)
        return seen

    def descendants(self, name: str) -> set[str]:
        """Names of all nodes that depend on the given tensor."""
        seen: set[str] = set()
        todo = deque([name])
        while todo:
            for node in self.consumers.get(todo.popleft(), []):
                if node.name not in seen:
                    seen.add(node.name)
                    todo.extend(node.outputs)
        return seen


def keeps_zero(graph: GraphView, node: Node) -> bool:
    """Whether a quantiser maps 0 to exactly 0, so that masking after it equals masking before it.

    A Q/DQ pair does: Q(0) is the zero point and DQ subtracts it. A FakeQuantize does when 0 lands on
    an output level that is 0 (ONNX-style ranges with the zero point inside), which depends on its
    ranges: evaluated here with OpenVINO's formula, per channel. Unknown ranges count as "no".
    """
    if node.op == "DequantizeLinear":
        source = graph.producer.get(node.inputs[0])
        return source is not None and source.op == "QuantizeLinear"
    if node.op != "FakeQuantize" or node.levels < 2:
        return False
    ranges = [graph.values.get(i) for i in node.inputs[1:5]]
    if any(r is None for r in ranges):
        return False
    in_low, in_high, out_low, out_high = (np.asarray(r, np.float64) for r in ranges)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.round((0.0 - in_low) / (in_high - in_low) * (node.levels - 1)) / (node.levels - 1)
        inside = step * (out_high - out_low) + out_low
    zero = np.where(
        np.minimum(in_low, in_high) >= 0.0, out_low, np.where(np.maximum(in_low, in_high) < 0.0, out_high, inside)
    )
    return bool(np.all(zero == 0.0))


def _inherited_scopes(nodes: list[Node]) -> list[Node]:
    """Module paths for the nodes whose names carry none, so that a module has one leaving map.

    A quantiser (FakeQuantize, Q/DQ) takes the module of the tensor it quantises; any other node whose
    name carries no module path (a convolution OpenVINO fused with its BatchNorm, named 'Multiply_123')
    takes the common module of its readers. A root-level op of the torch model ('/Relu') stays at the root.
    """
    scope = {n.name: n.scope for n in nodes}
    readers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n.name)
    for n in reversed(nodes):
        if not scope[n.name] and not n.scoped and n.op not in QUANTIZERS:
            around = [scope[r] for o in n.outputs for r in readers.get(o, [])]
            if around and all(around):
                scope[n.name] = _common_scope(around)
    producer = {o: n.name for n in nodes for o in n.outputs}
    for n in nodes:
        if n.op in QUANTIZERS and n.inputs and n.inputs[0] in producer:
            scope[n.name] = scope[producer[n.inputs[0]]] or scope[n.name]
    return [n if n.scope == scope[n.name] else replace(n, scope=scope[n.name]) for n in nodes]


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


# -- batch ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReshapeFix:
    """A Reshape whose constant target bakes in the export's batch size: ``target`` has 0 there instead,
    meaning "copy the batch from the data" (adapters emit that with their copy-zero semantics)."""

    node: Node
    target: np.ndarray


def plan_free_batch(graph: GraphView) -> list[ReshapeFix]:
    """The Reshapes to rewrite so that a model exported with a fixed batch B takes any batch.

    Exporters bake the example's batch into Reshape targets (``x.view(1, -1)``). Those whose data and
    result both start with B and whose target starts with B get 0 there. A target that holds another
    0 cannot be rewritten that way and is refused.
    """
    batch = graph.input_dims()[0] if graph.input_dims() else None
    if not isinstance(batch, int):
        return []
    fixes = []
    for node in graph.nodes:
        if node.op != "Reshape" or len(node.inputs) < 2:
            continue
        target = graph.values.get(node.inputs[1])
        data, result = graph.tensor(node.inputs[0]).shape, graph.tensor(node.outputs[0]).shape
        if target is None or target.ndim != 1 or not target.size or int(target[0]) != batch:
            continue
        if not (data and result and data[0] == batch == result[0]):
            continue
        if 0 in target[1:]:
            raise OvxaiError(
                f"the batch size is fixed to {batch} in node '{node.name}'", "re-export the model with a dynamic batch"
            )
        fixed = target.astype(np.int64).copy()
        fixed[0] = 0
        fixes.append(ReshapeFix(node, fixed))
    return fixes
