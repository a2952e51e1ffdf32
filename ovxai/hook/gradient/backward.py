"""The backward of a tail, target to logits: the nodes the gradient flows through, the refusal of any it cannot
differentiate, and the reverse sweep that gives each tensor the sum of its readers' gradients (a tensor that fans
out, a residual's skip, gets every branch's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from ovxai.errors import OvxaiError
from ovxai.graph.view import SHAPE_OPS, GraphView, Node
from ovxai.hook.gradient.flow import Flow
from ovxai.hook.gradient.patterns import fused
from ovxai.hook.gradient.rules import RULES
from ovxai.hook.tail import TailPlan

T = TypeVar("T")


@dataclass(frozen=True)
class BackwardPlan:
    """The tail's differentiable part: ``nodes`` (topologically ordered) from ``target`` to ``logits``, and the
    tensors on it that carry a gradient."""

    target: str
    logits: str
    nodes: tuple[Node, ...]
    active: frozenset[str]


def _carries(graph: GraphView, node: Node, name: str) -> bool:
    """A float result (an integer one has no gradient), or a quantiser's integer code (straight-through)."""
    tensor = graph.tensor(name)
    return tensor.dtype is None or tensor.is_float or node.op == "QuantizeLinear"


def plan_backward(graph: GraphView, tail: TailPlan, logits: str, method: str) -> BackwardPlan:
    """The nodes between the target and the logits that a gradient flows through, each with a rule that applies;
    otherwise a one-line refusal naming the first node that has none, and why."""
    reached = {tail.target}
    for node in tail.nodes:
        if node.op not in SHAPE_OPS and any(i in reached for i in node.inputs if i):
            reached.update(o for o in node.outputs if o and _carries(graph, node, o))
    needed, nodes = {logits}, []
    for node in reversed(tail.nodes):
        if any(o in needed for o in node.outputs) and any(i in reached for i in node.inputs if i):
            nodes.append(node)
            needed.update(i for i in node.inputs if i in reached)
    active = frozenset(reached & needed)
    if tail.target not in active:
        raise OvxaiError(f"the logits '{logits}' do not depend on the target through any differentiable op",
                         "pick another layer=")  # fmt: skip
    nodes = fused(graph, nodes[::-1])
    for node in nodes:
        rule = RULES.get(node.op)
        reason = "no backward rule covers this op" if rule is None else rule.refuses(graph, node, active)
        if reason is not None:
            raise OvxaiError(
                f"method={method} cannot differentiate '{node.name}' ({node.op}) between the target and the "
                f"prediction: {reason}",
                "use method=recipro (it runs the tail forward only, so it works on any tail) or a later layer=",
            )
    return BackwardPlan(tail.target, logits, tuple(nodes), active)


def backward(flow: Flow[T], plan: BackwardPlan, seed: T) -> T:
    """The gradient of the target, (K', R, ...), from the logits' ``seed``. A global pool's gradient stays broadcast
    over H, W (K', R, C, 1, 1) until a rule needs it whole (element-wise rules do not): the target's may be so too,
    which the methods' formulas allow (their spatial sums are written as N times a mean)."""
    ops = flow.ops
    grads: dict[str, T] = {plan.logits: seed}
    compact: set[str] = set()
    for node in reversed(plan.nodes):
        outs = [grads.get(o) for o in node.outputs]
        if all(g is None for g in outs):
            continue
        rule = RULES[node.op]
        broadcast = any(o in compact for o in node.outputs)
        if broadcast and not rule.broadcasts:
            outs = [
                flow.full(g, o) if g is not None and o in compact else g
                for g, o in zip(outs, node.outputs, strict=True)
            ]
            broadcast = False
        stays = rule.compacts or broadcast
        for name, grad in zip(node.inputs, rule.vjp(flow, node, outs), strict=True):
            if grad is None or not flow.needs(name):
                continue
            if name in grads:
                grads[name] = ops.binary("Add", grads[name], grad)  # broadcasting: whole unless both are broadcast
                if not stays:
                    compact.discard(name)
            else:
                grads[name] = grad
                if stays:
                    compact.add(name)
    return grads[plan.target]
