"""What the hook computes: the options of ``ovxai export`` that change the saliency branch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ovxai.conventions import (
    HOOK_PATHS,
    MASKS,
    SALIENCY_DTYPES,
    SCORES,
    HookPath,
    Mask,
    SaliencyDType,
    Score,
    parse_explained,
)
from ovxai.errors import OvxaiError
from ovxai.graph.view import Dim


@dataclass(frozen=True)
class Selection:
    """Which classes get a map: every class, each image's ``top`` best by the model's own prediction, or the
    fixed class ``ids`` (the same for every image)."""

    top: int | None = None
    ids: tuple[int, ...] | None = None

    @property
    def every(self) -> bool:
        return self.top is None and self.ids is None

    def count(self, classes: Dim) -> Dim:
        """K': how many maps each image gets, from the model's class count."""
        if self.top is not None:
            return self.top
        return classes if self.ids is None else len(self.ids)


@dataclass(frozen=True)
class HookOptions:
    """What the hook computes. Defaults match the authors' reference implementation."""

    score: Score = "softmax"
    mask: Mask = "onehot"
    saliency_dtype: SaliencyDType = "float32"
    path: HookPath = "auto"  # how the copies are computed: the first exact path that applies, or one by name
    explain: str = "all"  # which classes get a map: all, topK (of each image's prediction), or ids "281,285"

    def __post_init__(self) -> None:
        for name, allowed in (
            ("score", SCORES),
            ("mask", MASKS),
            ("saliency_dtype", SALIENCY_DTYPES),
            ("path", HOOK_PATHS),
        ):
            if getattr(self, name) not in allowed:
                raise OvxaiError(f"unknown {name}= {getattr(self, name)!r}", f"use one of: {', '.join(allowed)}")
        _ = self.selection

    @cached_property
    def selection(self) -> Selection:
        """``explain`` parsed, once."""
        try:
            picked = parse_explained(self.explain)
        except ValueError as exc:
            raise OvxaiError(f"explain= {exc}", "use all, top5, or class ids like explain=281,285") from None
        return Selection(top=picked) if isinstance(picked, int) else Selection(ids=picked)
