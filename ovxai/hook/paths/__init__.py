"""The ways of computing the masked copies, tried in a declared order: the first that applies is taken.

CNN tails: ``mean`` and ``linear`` (closed forms through per-position ops and a global pool or a linear layer),
``windows`` (each copy computed only where it differs from the background), ``mosaic`` (every copy on the whole
map: always applies). Transformer blocks: ``tokens`` (the exact short sequence), ``mosaic`` (every copy on all
tokens). Each path lives in its own module with ``plan`` (the plan, or :class:`Declined` with the reason) and
``emit``; ``ovxai inspect`` prints every path's plan or reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

from ovxai.conventions import HookPath
from ovxai.errors import OvxaiError
from ovxai.graph.view import GraphView
from ovxai.hook.options import HookOptions
from ovxai.hook.paths.linear import LINEAR
from ovxai.hook.paths.mean import MEAN
from ovxai.hook.paths.mosaic import MOSAIC
from ovxai.hook.paths.path import Cut, Declined, Path
from ovxai.hook.paths.vit_general import TOKEN_MOSAIC
from ovxai.hook.paths.vit_short import TOKENS
from ovxai.hook.paths.windows import WINDOWS
from ovxai.hook.tail import TailPlan
from ovxai.hook.tokens import TokenPlan

CNN_PATHS: tuple[Path[TailPlan], ...] = (MEAN, LINEAR, WINDOWS, MOSAIC)  # cheapest exact path first
VIT_PATHS: tuple[Path[TokenPlan], ...] = (TOKENS, TOKEN_MOSAIC)


@dataclass(frozen=True)
class Choice(Generic[Cut]):
    """The path taken for a cut, its plan, and the paths tried before it with why each declined."""

    path: Path[Cut]
    plan: Any
    declined: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> HookPath:
        return self.path.name

    def replaced(self) -> frozenset[str]:
        return self.path.replaced(self.plan)


def choose(paths: tuple[Path[Cut], ...], graph: GraphView, cut: Cut, options: HookOptions) -> Choice[Cut]:
    """The first path that applies (``options.path`` auto), or the one asked for, refused with its reason."""
    declined: list[tuple[str, str]] = []
    for path in paths:
        if options.path not in ("auto", path.name):
            continue
        planned = path.plan(graph, cut, options)
        if isinstance(planned, Declined):
            if options.path == path.name:
                raise OvxaiError(
                    f"path={path.name} does not apply here: {planned.reason}", "use path=auto (see `ovxai inspect`)"
                )
            declined.append((path.name, planned.reason))
            continue
        return Choice(path, planned, tuple(declined))
    raise OvxaiError(
        f"path={options.path} is not a path of this model", f"use one of: auto, {', '.join(p.name for p in paths)}"
    )


def survey(paths: tuple[Path[Cut], ...], graph: GraphView, cut: Cut, options: HookOptions) -> list[Choice[Cut]]:
    """Every path's plan, or its :class:`Declined` reason as the plan (what ``ovxai inspect`` shows)."""
    return [Choice(path, path.plan(graph, cut, options)) for path in paths]
