"""What a path is: one way of computing Recipro-CAM's masked copies, with a plan that either applies to a tail
or declines with a reason (onnxscript's rewrite rules: a match, a check that says why not, a rewrite)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.view import GraphView, Node

if TYPE_CHECKING:
    from ovxai.hook.options import HookOptions

T = TypeVar("T")
Cut = TypeVar("Cut", contravariant=True)


@dataclass(frozen=True)
class Declined:
    """A path that does not apply to a tail, and why (what ``ovxai inspect`` prints)."""

    reason: str


@dataclass
class Copies(Generic[T]):
    """What a path emitted for all B*N copies; the hook copies the rest of the tail on top of it."""

    values: dict[str, T] = field(default_factory=dict)  # tail tensors' counterparts, (B*N, ...)
    replaced: frozenset[str] = frozenset()  # tail nodes whose outputs the path computed (not copied)
    lazy: dict[str, Callable[[], T]] = field(default_factory=dict)  # counterparts built only if something reads them
    special: Callable[[Node], list[T] | None] | None = None  # the path's own copy of a node; None: copied as it is
    scores: T | None = None  # (B, K, N) class-major scores: the path computed them, no tail is copied
    pool: Node | None = None  # the global average pool the copies ended at (its features become an output)


class Path(Protocol[Cut]):
    """One way of computing the copies, for a cut of type ``Cut`` (a CNN's tail, or a transformer block's)."""

    name: HookPath  # the ``--path`` value that asks for it

    def plan(self, graph: GraphView, cut: Cut, options: HookOptions) -> Any:
        """The path's plan for this cut, or :class:`Declined` with the reason it does not apply."""
        ...

    def emit(self, hook: Any, plan: Any) -> Copies[Any]:
        """The copies, emitted through ``hook.ops``."""
        ...

    def macs(self, graph: GraphView, cut: Cut, plan: Any, mask: Mask) -> int:
        """Multiply-accumulates per image the copies cost on this path (the tail's ops N times, or less)."""
        ...

    def replaced(self, plan: Any) -> frozenset[str]:
        """Tail nodes the path computes itself (the rest of the tail is copied)."""
        ...
