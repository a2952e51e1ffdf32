"""What a backward rule is: the vector-Jacobian product of one op, emitted as forward ops of the format.

``vjp(flow, node, grads)`` takes the gradients of the node's outputs (None where no gradient reaches one) and gives
those of its inputs (None for an input that needs none: a weight, a shape). ``refuses(graph, node, active)`` says
why the rule cannot differentiate this node (its attributes, or a gradient wanted through a weight), or None. Each
rule reads the typed facts of the view's :class:`~ovxai.graph.view.Node`, never a format's own attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovxai.graph.view import GraphView, Node
from ovxai.hook.gradient.flow import Flow

Vjp = Callable[[Flow[Any], Node, list[Any]], list[Any]]
Check = Callable[[GraphView, Node, frozenset[str]], "str | None"]
"""(the view, the node, the tensors that carry a gradient) -> why the rule cannot differentiate the node, or None."""


def always(graph: GraphView, node: Node, active: frozenset[str]) -> str | None:
    """The rule applies to every node of its op."""
    return None


@dataclass(frozen=True)
class Rule:
    """One op's backward. ``broadcasts``: element-wise with one input the shape of the output, so it takes a
    gradient still broadcast over H, W (a global pool's) and gives one broadcast the same way; ``compacts``: the
    gradient it gives is broadcast over the axes the op reduced (expanded only where a later rule needs it)."""

    vjp: Vjp
    refuses: Check = always
    broadcasts: bool = False
    compacts: bool = False


def one(vjp: Callable[[Flow[Any], Node, Any], Any]) -> Vjp:
    """A rule of a single-output op whose first input is the only one with a gradient."""

    def rule(flow: Flow[Any], node: Node, grads: list[Any]) -> list[Any]:
        return [vjp(flow, node, grads[0]), *[None] * (len(node.inputs) - 1)]

    return rule
