"""What a path is: one way of computing Recipro-CAM's masked copies, with a plan that either applies to a tail
or declines with a reason (onnxscript's rewrite rules: a match, a check that says why not, a rewrite)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from ovxai.conventions import HookPath, Mask
from ovxai.graph.ops import Ops
from ovxai.graph.view import GraphView, Node
from ovxai.hook.masks import Tap
from ovxai.hook.options import HookOptions
from ovxai.hook.tail import TailPlan
from ovxai.hook.tokens import TokenPlan

T = TypeVar("T")
Cut = TypeVar("Cut", contravariant=True)
ClassAxis = Literal[1, 2]  # where the classes are in per-image scores: (B, K, N) columns or (B, N, K) rows


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


class Site(Protocol[T]):
    """What a path reads and calls of the hook it emits into (:class:`~ovxai.hook.recipro.ReciproCamHook`)."""

    ops: Ops[T]
    graph: GraphView
    tail: TailPlan
    options: HookOptions
    t: T  # the target T, (B, C, H, W)
    t_shape: T
    batch: T  # 1-element int64 tensors: B, H, W, N
    h: T
    w: T
    n: T
    values: dict[str, T]  # original tensor -> its counterpart for all copies

    @property
    def channels(self) -> T: ...

    @property
    def masks(self) -> T:
        """(N, N): row n is position n's mask."""
        ...

    def input(self, name: str) -> T | None:
        """The counterpart for all copies of a tensor a copied node reads."""
        ...

    def copied(self, nodes: Sequence[Node], values: dict[str, T]) -> dict[str, T]:
        """Copies of a chain of nodes reading ``values`` for the tensors given there, the originals' otherwise."""
        ...

    def per_image(self, classes: T, class_axis: ClassAxis) -> T:
        """The shape of one image's scores: (B, N, classes) rows (axis 2) or (B, classes, N) columns (1)."""
        ...


class TokenSite(Site[T], Protocol[T]):
    """What the transformer paths read of :class:`~ovxai.hook.vit.ViTReciproCamHook`."""

    tokens: TokenPlan
    slots: tuple[Tap, ...]  # the mask's taps

    @property
    def length(self) -> int:
        """Tokens per copy."""
        ...

    def block_inputs(self) -> dict[str, Callable[[], T]]:
        """The copies of the block's input X and of LN1(X), built when read."""
        ...

    def gathered(self, x: T, zero: T, like: str) -> T:
        """(B, N*L, D): copy n's token l is g x[p] + (1 - g) zero, for its mask weight g at token p."""
        ...


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
