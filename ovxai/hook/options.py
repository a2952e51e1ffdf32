"""What the hook computes: the options of ``ovxai export`` that change the saliency branch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ovxai.conventions import (
    HOOK_PATHS,
    MASKS,
    METHODS,
    SALIENCY_DTYPES,
    SCORES,
    HookPath,
    Mask,
    Method,
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


DEFAULT_STEPS = 20  # Integrated Grad-CAM's Riemann steps (tools/eval's reference uses the same)


@dataclass(frozen=True)
class HookOptions:
    """What the hook computes. Defaults match each method's reference implementation: Recipro-CAM scores the
    masked copies by softmax (its authors' code), the gradient methods differentiate the class logit (their
    papers); ``score`` left out takes the method's default."""

    score: Score | None = None  # None: the method's default (softmax for recipro, logits for the gradient methods)
    mask: Mask = "onehot"
    saliency_dtype: SaliencyDType = "float32"
    path: HookPath = "auto"  # how the copies are computed: the first exact path that applies, or one by name
    explain: str = "all"  # which classes get a map: all, topK (of each image's prediction), or ids "281,285"
    method: Method = "recipro"
    steps: int | None = None  # integrated-gradcam: the steps M from the black image (None: DEFAULT_STEPS)

    def __post_init__(self) -> None:
        for name, allowed in (
            ("method", METHODS),
            ("score", (None, *SCORES)),
            ("mask", MASKS),
            ("saliency_dtype", SALIENCY_DTYPES),
            ("path", HOOK_PATHS),
        ):
            if getattr(self, name) not in allowed:
                shown = ", ".join(str(a) for a in allowed if a is not None)
                raise OvxaiError(f"unknown {name}= {getattr(self, name)!r}", f"use one of: {shown}")
        if self.score is None:
            object.__setattr__(self, "score", "softmax" if self.method == "recipro" else "logits")
        if self.gradient:
            for name, default in (("mask", "onehot"), ("path", "auto")):
                if getattr(self, name) != default:
                    raise OvxaiError(
                        f"{name}= {getattr(self, name)} applies to Recipro-CAM's masked copies, not to method= "
                        f"{self.method}",
                        f"drop {name}=, or use method=recipro",
                    )
        if self.steps is not None:
            if self.method != "integrated-gradcam":
                raise OvxaiError(f"steps= applies to method=integrated-gradcam, not {self.method}", "drop steps=")
            if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
                raise OvxaiError(f"steps= {self.steps!r} is not a whole number >= 1", "e.g. steps=20")
        _ = self.selection

    @property
    def gradient(self) -> bool:
        """A gradient method: the backward of the tail is emitted, not masked copies."""
        return self.method != "recipro"

    @property
    def step_count(self) -> int:
        """Integrated Grad-CAM's M."""
        return self.steps if self.steps is not None else DEFAULT_STEPS

    @cached_property
    def selection(self) -> Selection:
        """``explain`` parsed, once."""
        try:
            picked = parse_explained(self.explain)
        except ValueError as exc:
            raise OvxaiError(f"explain= {exc}", "use all, top5, or class ids like explain=281,285") from None
        return Selection(top=picked) if isinstance(picked, int) else Selection(ids=picked)
