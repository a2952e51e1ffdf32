"""The per-position ops between the target and the first op that mixes positions: what the closed-form paths
(:mod:`.mean`, :mod:`.linear`) evaluate per copy without the mosaic.

With a one-hot mask, copy n is T's column n at position n and zeros elsewhere. Ops that act position by
position (1 x 1 convolutions, BatchNorm, activations, per-channel affine ops) keep that shape: column n
becomes U's column n, where U is the original path's own tensor (``source``), and every other position holds
the same *background* vector z, their response to a zero column. With the 3 x 3 Gaussian mask the same holds
with up to nine scaled columns per copy: for each kernel weight s in {4, 2, 1}/16, the ops' response to s T.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ovxai.graph.view import SHAPE_OPS, GraphView, Node
from ovxai.hook.paths.path import Declined, Site
from ovxai.hook.tail import TailPlan, acts_per_position, is_constant

T = TypeVar("T")
GAUSSIAN_WEIGHTS = (4.0, 2.0, 1.0)  # the Gaussian kernel's distinct weights, times 16

# Per-position ops with f(s x) = s f(x) for s > 0 whatever their constants (a 1 x 1 pool is the identity).
_HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu", "PRelu", "Identity", "Dropout", "MaxPool", "AveragePool"})


@dataclass(frozen=True)
class Positionwise:
    """``nodes`` compute U = ``source`` from T position by position; ``boundary`` is the one op that reads U
    and mixes positions."""

    nodes: tuple[Node, ...]
    source: str
    boundary: Node

    def homogeneous(self, graph: GraphView) -> bool:
        """The ops commute with a positive scale, f(s x) = s f(x), so they map a zero column to zero: z = 0."""
        return all(_homogeneous(graph, n) for n in self.nodes)


def plan_positionwise(graph: GraphView, tail: TailPlan) -> Positionwise | Declined:
    """The per-position ops from the target and the single op after them that mixes positions."""
    region = {tail.target}  # tensors that are position-by-position functions of T
    nodes: list[Node] = []
    for node in tail.nodes:
        if any(i in region for i in node.inputs) and acts_per_position(graph, node, region):
            nodes.append(node)
            region.update(node.outputs)
    inside = {n.name for n in nodes}
    boundary = [
        n for n in tail.nodes if n.name not in inside and n.op not in SHAPE_OPS and any(i in region for i in n.inputs)
    ]
    if len(boundary) != 1 or boundary[0].inputs[0] not in region:
        mixing = ", ".join(f"'{n.name}' ({n.op})" for n in boundary[:3]) or "none"
        return Declined(f"the map is read position by position up to several ops that mix positions ({mixing})")
    source = boundary[0].inputs[0]
    needed = graph.ancestors([source])  # the other per-position nodes only feed shape reads
    return Positionwise(tuple(n for n in nodes if n.name in needed), source, boundary[0])


def _homogeneous(graph: GraphView, node: Node) -> bool:
    if node.op == "Conv":
        return len(node.inputs) < 3 or not node.inputs[2]  # no bias
    if node.op in ("Mul", "Div"):
        return is_constant(graph, node.inputs[1])  # by a constant
    return node.op in _HOMOGENEOUS_OPS


# -- emission --------------------------------------------------------------------------------------


def zeros(hook: Site[T], dtype: str, channels: T | None = None) -> T:
    """A (1, C, 1, 1) map of zeros with T's channels (``channels``: that count, as a 1-element tensor)."""
    ops = hook.ops
    one = ops.i64([1])
    count = hook.channels if channels is None else channels
    return ops.expand(ops.cast(ops.f32(0.0), dtype), ops.concat([one, count, one, one]))


def through(hook: Site[T], pw: Positionwise, start: T) -> T:
    """A copy of the per-position ops run on ``start`` in place of T: the counterpart of ``pw.source``."""
    return hook.copied(pw.nodes, {hook.tail.target: start})[pw.source]


def background(hook: Site[T], pw: Positionwise) -> T:
    """z: the per-position ops' response to a zero column, (1, C', 1, 1)."""
    return through(hook, pw, zeros(hook, hook.ops.dtype(hook.tail.target)))


def scaled(hook: Site[T], pw: Positionwise) -> list[tuple[T, T]]:
    """Gaussian mask through the per-position ops: per kernel weight s, the (N, N) placement of s (where mask n
    holds s) and the ops' response to s T, (B, C', H, W)."""
    ops = hook.ops
    dtype = ops.dtype(pw.source)
    parts = []
    for weight in GAUSSIAN_WEIGHTS:
        scaled_t = ops.binary("Mul", hook.t, ops.cast(ops.f32(weight / 16), ops.dtype(hook.tail.target)))
        placement = ops.cast(ops.binary("Equal", hook.masks, ops.cast(ops.f32(weight / 16), dtype)), dtype)
        parts.append((placement, through(hook, pw, scaled_t)))
    return parts
