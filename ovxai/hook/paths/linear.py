"""The linear path: per-position ops, then flatten and a product with a constant weight (VGG, AlexNet heads).

With W_n the weight's columns of position n, the per-position products P_n = W_n U[:, n] (one batched product
with the weight re-laid (N, C', K)) give both sides: the original output is sum_n P_n + b (the same
multiply-adds summed in another order, so equal to float rounding), and copy n is P_n + b + sum_{m != n} W_m z
(one-hot; the Gaussian mask places several positions' products). The hook replaces the original product, so
the file and the engine hold the weight once, re-laid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.macs import macs, node_macs
from ovxai.graph.view import GraphView, Node
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.path import Copies, Declined, Site
from ovxai.hook.paths.positionwise import Positionwise, plan_positionwise, scaled, through, zeros
from ovxai.hook.tail import TailPlan, is_constant, is_stored

T = TypeVar("T")


@dataclass(frozen=True)
class LinearPlan:
    """``pw.boundary`` flattens a static (B, C', H, W) map to (B, C' H W); ``product`` reads it."""

    pw: Positionwise
    product: Node
    homogeneous: bool  # the per-position ops map a zero column to zero (z = 0)


class LinearPath:
    name: HookPath = "linear"

    def plan(self, graph: GraphView, tail: TailPlan, options: HookOptions) -> LinearPlan | Declined:
        pw = plan_positionwise(graph, tail)
        if isinstance(pw, Declined):
            return pw
        product = _product_after_flatten(graph, pw.boundary, tail.nodes)
        if product is None:
            return Declined(f"the first op that mixes positions, '{pw.boundary.name}' ({pw.boundary.op}), is not a "
                            "flatten of a static map read by one product with a constant weight")  # fmt: skip
        return LinearPlan(pw, product, pw.homogeneous(graph))

    def replaced(self, plan: LinearPlan) -> frozenset[str]:
        return frozenset(n.name for n in (*plan.pw.nodes, plan.product, plan.pw.boundary))

    def macs(self, graph: GraphView, tail: TailPlan, plan: LinearPlan, mask: Mask) -> int:
        """The rest of the tail N times; the per-position products replace the original product (the same
        multiply-adds) and give the one-hot copies too; a Gaussian mask through per-position ops that do not
        commute with its scales needs the ops and the weight once more per kernel weight."""
        total = tail.positions(graph) * macs(graph, [n for n in tail.nodes if n.name not in self.replaced(plan)])
        if mask == "onehot" or not plan.pw.nodes or plan.homogeneous:
            return total
        return total + 3 * (macs(graph, plan.pw.nodes) + node_macs(graph, plan.product))

    def emit(self, hook: Site[T], plan: LinearPlan) -> Copies[T]:
        ops, pw, product = hook.ops, plan.pw, plan.product
        _, c, h, w = _static(hook, pw.source)
        n = h * w
        if product.transpose_b:  # (K, C'*N) -> (K, C', N) -> (N, C', K)
            weight = ops.relaid(product.inputs[1], [-1, c, n], [2, 1, 0])
            classes = _static(hook, product.inputs[1])[0]
        else:  # (C'*N, K) -> (C', N, K) -> (N, C', K)
            weight = ops.relaid(product.inputs[1], [c, n, -1], [1, 0, 2])
            classes = _static(hook, product.inputs[1])[1]
        columns_shape = ops.i64([-1, c, n])

        def products(columns: T) -> T:  # (B, C', H, W) -> (N, B, C') @ (N, C', K) -> (N, B, K)
            return ops.matmul(ops.transpose(ops.reshape(columns, columns_shape), [2, 0, 1]), weight)

        def rows(x: T) -> T:  # (N, B, K) -> (B, N, K)
            return ops.transpose(x, [1, 0, 2])

        bias = ops.tensor(product.inputs[2]) if len(product.inputs) > 2 and product.inputs[2] else None
        per_position = products(ops.tensor(pw.source))
        original = ops.reshape(ops.reduce("ReduceSum", per_position, 0), ops.i64([-1, classes]))
        ops.replace(product.outputs[0], original if bias is None else ops.binary("Add", original, bias))
        if hook.options.mask == "onehot":
            copies = rows(per_position)
        elif plan.homogeneous or not pw.nodes:  # copy n at p is m_n(p) U[:, p]: the masks place P
            copies = ops.matmul(hook.masks, rows(per_position))
        else:
            copies = _placed(hook, [(a, products(column)) for a, column in scaled(hook, pw)], rows)
        offset = bias if plan.homogeneous or not pw.nodes else _background_offset(hook, pw, products, bias)
        if offset is not None:
            copies = ops.binary("Add", copies, offset)
        return Copies({product.outputs[0]: ops.reshape(copies, ops.i64([-1, classes]))}, self.replaced(plan))


LINEAR = LinearPath()


def _static(hook: Site[T], name: str) -> tuple[int, ...]:
    """The dimensions of a tensor the plan requires to be static (beyond its batch)."""
    shape = hook.graph.tensor(name).shape or ()
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def _background_offset(hook: Site[T], pw: Positionwise, products: Callable[[T], T], bias: T | None) -> T:
    """(N, K): what the background adds to copy n, b + sum_m W_m z - sum_{p in n's footprint} W_p z.

    Built from constants only (static shapes): the engines fold it once, at load."""
    ops = hook.ops
    _, c, h, w = _static(hook, pw.source)
    channels = (*_static(hook, hook.tail.target), -1, -1)[1]  # -1: unknown, read at run time
    count = ops.i64([channels]) if channels > 0 else hook.channels
    z = through(hook, pw, zeros(hook, ops.dtype(hook.tail.target), count))
    per_position = ops.reshape(products(ops.expand(z, ops.i64([1, c, h, w]))), ops.i64([h * w, -1]))  # W_n z
    inside = per_position
    if hook.options.mask != "onehot":  # the footprint of mask n: the positions it does not leave at z
        dtype = ops.dtype(pw.source)
        zero = ops.cast(ops.f32(0.0), ops.dtype(hook.tail.target))
        inside = ops.matmul(ops.cast(ops.binary("Greater", hook.masks, zero), dtype), per_position)
    offset = ops.binary("Sub", ops.reduce("ReduceSum", per_position, 0), inside)
    return offset if bias is None else ops.binary("Add", offset, bias)


def _placed(hook: Site[T], parts: list[tuple[T, T]], rows: Callable[[T], T]) -> T:
    """sum_j A_j @ rows(P_j): each part's per-position products placed by its (N, N) matrix."""
    total: T | None = None
    for placement, products in parts:
        placed = hook.ops.matmul(placement, rows(products))
        total = placed if total is None else hook.ops.binary("Add", total, placed)
    assert total is not None
    return total


def _product_after_flatten(graph: GraphView, node: Node, tail: list[Node]) -> Node | None:
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
    if not is_stored(graph, product.inputs[1]):
        # A compressed weight (INT8/INT4 weight-only, dequantised in the graph) runs in the engine's own kernel,
        # which may quantise the activations too: the re-laid products would not be the same sums reordered.
        return None
    # Any size: the original product is computed from the per-position one too, so the file (and the engine)
    # holds only the re-laid weight (N, C', K), never a second copy.
    return product
