"""A format-neutral view of a model graph, and the plan of the explanatory hook's tail.

Both graph formats (ONNX, OpenVINO) are read into :class:`GraphView`; everything that decides
*what* the hook copies and *how* each input of the copied tail is fed lives here, once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

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
    t = 0 .. kernel - 1, per axis (pads at the start, ``ends`` at the end; 'SAME' padding already resolved by the
    adapter)."""

    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int]
    dilations: tuple[int, int]
    ends: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Pooling:
    """A 2-D MaxPool's or AveragePool's window (``window``), its output size rule (``ceil``: rounded up) and,
    for an average, whether padded positions count in the divisor (``counts_pads``)."""

    window: Sliding
    ceil: bool = False
    counts_pads: bool = True


@dataclass(frozen=True)
class Slicing:
    """A Slice with constant bounds: per sliced axis (non-negative where the rank is known), start, end (clamped
    later to the axis) and step."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    axes: tuple[int, ...]
    steps: tuple[int, ...]


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
    whole_window: bool = False  # AveragePool / MaxPool with one window over the whole H x W, no padding
    start: int = 0  # Shape: the first dimension it reads (negative: from the end)
    weight_inner: tuple[Dim, ...] | None = None  # Conv / MatMul / Gemm: weight dims summed per output value
    levels: int = 0  # FakeQuantize: the number of quantisation levels
    pointwise: bool = False  # Conv whose kernel is 1 x 1 with stride 1 and no padding: it acts per position
    transpose_b: bool = False  # Gemm (transB) / MatMul: the weight is stored (K, C) rather than (C, K)
    plain_product: bool = False  # Gemm / MatMul that is x @ W (+ bias): no transposed x, alpha 1, beta 1
    sliding: Sliding | None = None  # 2-D Conv (grouped too): how its kernel slides over the input
    # The facts the gradient's backward rules read (ovxai.hook.gradient.rules):
    groups: int = 1  # Conv: channel groups (the input channels / the weight's input channels)
    pool: Pooling | None = None  # MaxPool / AveragePool (2-D)
    axis: int | None = None  # Softmax, LogSoftmax, Concat, Split, Flatten, LayerNormalization: the axis as written
    alpha: float = 1.0  # Gemm: alpha; HardSigmoid: the slope; LeakyRelu: the negative slope
    beta: float = 0.0  # Gemm: beta; HardSigmoid: the offset; Swish: the sigmoid's scale
    bounds: tuple[float, float] | None = None  # Clip: the constant lower and upper bound (+-inf where absent)
    epsilon: float = 0.0  # BatchNormalization, LayerNormalization, MeanVarianceNormalization
    eps_inside: bool = True  # MeanVarianceNormalization: the epsilon is added under the square root
    normalize_variance: bool = True  # MeanVarianceNormalization: divides by the deviation (else only centres)
    approximate: bool = False  # Gelu: the tanh approximation (else the exact erf form)
    transpose_a: bool = False  # Gemm (transA) / MatMul: the first operand is transposed
    split: tuple[int, ...] | None = None  # Split / VariadicSplit: the sizes of the outputs along ``axis``
    slicing: Slicing | None = None  # Slice with constant bounds
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
    constants: set[str]  # tensors with a fixed value whatever the batch (initializers, folded arithmetic)
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
                kind[o] = Kind.CONSTANT if o in self.constants else worst  # the adapter found its value fixed
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
        if node.op in ("GlobalAveragePool", "GlobalMaxPool") or node.whole_window:
            return None  # one value per channel: no map any more
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
