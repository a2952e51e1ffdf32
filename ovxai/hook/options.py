"""What the hook computes: the options of ``ovxai export`` that change the saliency branch."""

from __future__ import annotations

from dataclasses import dataclass

from ovxai.conventions import MASKS, SALIENCY_DTYPES, SCORES, Mask, SaliencyDType, Score, parse_explained
from ovxai.errors import OvxaiError


@dataclass(frozen=True)
class HookOptions:
    """What the hook computes. Defaults match the authors' reference implementation."""

    score: Score = "softmax"
    mask: Mask = "onehot"
    saliency_dtype: SaliencyDType = "float32"
    fast_path: bool = True  # skip the mosaic exactly where the tail allows it (see graph.Shortcut)
    explain: str = "all"  # which classes get a map: all, topK (of each image's prediction), or ids "281,285"

    def __post_init__(self) -> None:
        for name, allowed in (("score", SCORES), ("mask", MASKS), ("saliency_dtype", SALIENCY_DTYPES)):
            if getattr(self, name) not in allowed:
                raise OvxaiError(f"unknown {name}= {getattr(self, name)!r}", f"use one of: {', '.join(allowed)}")
        self.explained()

    def explained(self) -> int | tuple[int, ...] | None:
        """None: every class; k: each image's k best classes; a tuple: those class ids."""
        try:
            return parse_explained(self.explain)
        except ValueError as exc:
            raise OvxaiError(f"explain= {exc}", "use all, top5, or class ids like explain=281,285") from None
