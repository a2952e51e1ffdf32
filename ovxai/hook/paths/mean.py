"""The global-pool path: per-position ops, then a global average pool, evaluated per copy in closed form.

Copy n's pooled features are (U[:, n] + (N - 1) z) / N (one-hot; see :mod:`.positionwise` for U and z), or
with several scaled columns for the Gaussian mask: (sum_j D_j A_j^T + N z) / N over the parts (A_j, D_j),
A_j an (N, N) placement and D_j = columns - z. With no per-position op, z = 0 and U = T: the classic GAP fast
path, (M T^T) / N. The (B*N, C, H, W) mosaic never exists; the copies cost the rest of the tail on N rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.macs import macs
from ovxai.graph.view import SHAPE_OPS, GraphView, Node
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, Declined, Site
from ovxai.hook.paths.positionwise import Positionwise, background, plan_positionwise, scaled
from ovxai.hook.tail import TailPlan, acts_per_position, global_pool_keepdims, tail_logits

T = TypeVar("T")


@dataclass(frozen=True)
class MeanPlan:
    """``pw.boundary`` is a global average pool; ``after``: per-position ops right after it (a quantiser before
    an INT8 layer), run on the pooled values laid out as a map; ``class_major``: the pooled features are the
    class logits up to reshapes (SqueezeNet's 1 x 1 convolution classifier), so the copies are scored (B, K, N)."""

    pw: Positionwise
    keepdims: bool
    after: tuple[Node, ...] = ()
    class_major: bool = False

    @property
    def output(self) -> str:
        """The tail tensor whose counterpart the path computes for all copies."""
        return (self.after[-1] if self.after else self.pw.boundary).outputs[0]


class MeanPath:
    name: HookPath = "mean"

    def plan(self, graph: GraphView, tail: TailPlan, options: HookOptions) -> MeanPlan | Declined:
        pw = plan_positionwise(graph, tail)
        if isinstance(pw, Declined):
            return pw
        keepdims = global_pool_keepdims(graph, pw.boundary)
        if keepdims is None:
            return Declined(f"the first op that mixes positions, '{pw.boundary.name}' ({pw.boundary.op}), is not a "
                            "global average pool")  # fmt: skip
        after = _after_pool(graph, pw.boundary, tail.nodes) if keepdims else ()
        plan = MeanPlan(pw, keepdims, after)
        return MeanPlan(pw, keepdims, after, class_major=not after and _pooled_are_logits(graph, tail, plan))

    def replaced(self, plan: MeanPlan) -> frozenset[str]:
        return frozenset(n.name for n in (*plan.pw.nodes, plan.pw.boundary, *plan.after))

    def macs(self, graph: GraphView, tail: TailPlan, plan: MeanPlan, mask: Mask) -> int:
        """The rest of the tail N times, and for the Gaussian mask the per-position ops once per kernel weight."""
        replaced = self.replaced(plan)
        total = tail.positions(graph) * macs(graph, [node for node in tail.nodes if node.name not in replaced])
        return total if mask == "onehot" else total + 3 * macs(graph, plan.pw.nodes)

    def emit(self, hook: Site[T], plan: MeanPlan) -> Copies[T]:
        ops, pw = hook.ops, plan.pw
        dtype = ops.dtype(pw.source)
        channels = ops.slice(ops.shape(ops.tensor(pw.source)), 1, 2)
        z = background(hook, pw) if pw.nodes else None
        parts: list[tuple[T | None, T]] = []
        if z is None:
            parts.append((None if hook.options.mask == "onehot" else hook.masks, hook.t))
        elif hook.options.mask == "onehot":
            parts.append((None, ops.binary("Sub", ops.tensor(pw.source), z)))
        else:
            parts.extend((placement, ops.binary("Sub", column, z)) for placement, column in scaled(hook, pw))
        columns = _pooled_columns(hook, parts, z, ops.concat([hook.batch, channels, hook.n]), ops.cast(hook.n, dtype))
        if plan.class_major:
            return Copies(scores=columns, pool=pw.boundary)
        replaced = self.replaced(plan)
        if plan.after:  # the per-position ops after the pool run on the pooled map, then the copies become rows
            pooled_map = ops.reshape(columns, ops.concat([hook.batch, channels, hook.h, hook.w]))
            result = hook.copied(plan.after, {pw.boundary.outputs[0]: pooled_map})[plan.output]
            out_channels = ops.slice(ops.shape(result), 1, 2)
            rows = ops.transpose(ops.reshape(result, ops.concat([hook.batch, out_channels, hook.n])), [0, 2, 1])
            copies = ops.reshape(rows, ops.concat([ops.i64([-1]), out_channels, ops.i64([1, 1])]))
            return Copies({plan.output: copies}, replaced, pool=pw.boundary)
        dims = [ops.i64([-1]), channels] + ([ops.i64([1, 1])] if plan.keepdims else [])
        pooled = ops.reshape(ops.transpose(columns, [0, 2, 1]), ops.concat(dims))
        return Copies({plan.output: pooled}, replaced, pool=pw.boundary)


MEAN = MeanPath()


def _pooled_columns(hook: Site[T], parts: list[tuple[T | None, T]], z: T | None, flat: T, n: T) -> T:
    """(B, C', N): column n is copy n's pooled features, (sum_j D_j A_j^T + N z) / N: each part's columns placed
    by its (N, N) matrix (None: the identity)."""
    ops = hook.ops
    total: T | None = None
    for placement, columns in parts:
        flat_columns = ops.reshape(columns, flat)
        placed = flat_columns if placement is None else ops.matmul(flat_columns, ops.transpose(placement, [1, 0]))
        total = placed if total is None else ops.binary("Add", total, placed)
    assert total is not None
    if z is not None:  # the N - |footprint| background positions, plus z under each column
        total = ops.binary("Add", total, ops.binary("Mul", ops.reshape(z, ops.i64([1, -1, 1])), n))
    return ops.binary("Div", total, n)


def _after_pool(graph: GraphView, pool: Node, tail: list[Node]) -> tuple[Node, ...]:
    """The chain of per-position ops that reads a (B, C, 1, 1) pool's output, one reader after another: engines
    run such ops (a FakeQuantize) far faster on a (B, C, H, W) map of the copies than on B*N 1 x 1 rows."""
    in_tail = {n.name for n in tail}
    chain: list[Node] = []
    current = pool.outputs[0]
    while True:
        readers = [r for r in graph.consumers.get(current, []) if r.name in in_tail and r.op not in SHAPE_OPS]
        if len(readers) != 1 or readers[0].inputs[0] != current or not acts_per_position(graph, readers[0], {current}):
            return tuple(chain)
        chain.append(readers[0])
        current = readers[0].outputs[0]


def _pooled_are_logits(graph: GraphView, tail: TailPlan, plan: MeanPlan) -> bool:
    """The pooled features are the class logits up to reshapes: scoring the copies class-major, (B, K, N), in the
    original path's layout, spares moving 1000-class scores between (B, N, K) rows and (B, K, N) maps."""
    logits_name = tail_logits(graph, tail)
    tensor = logits_name
    while tensor != plan.output:
        node = graph.producer.get(tensor)
        if node is None or node.op not in ("Reshape", "Flatten", "Squeeze", "Identity"):
            return False
        tensor = node.inputs[0]
    pooled = graph.tensor(plan.output).shape or ()
    logits = graph.tensor(logits_name).shape or ()
    # (B, K, 1, 1) or (B, K) -> (B, K): the same K values per image, in the same order
    return len(logits) == 2 and len(pooled) >= 2 and logits[1] is not None and pooled[1] == logits[1]
