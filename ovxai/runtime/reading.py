"""What a patched model's outputs are read into: predictions, explanations, and the :class:`Reader` that turns
one inference's outputs into them (probabilities, labels, which rows of the maps are the wanted classes)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ovxai.conventions import CLASSES_OUTPUT, SALIENCY_OUTPUT
from ovxai.errors import OvxaiError
from ovxai.runtime import pictures
from ovxai.runtime.backends import Outputs

Targets = Union[None, str, Sequence[int]]  # noqa: UP007 - a runtime alias
"""Which classes to map: 'topK' (the K best, e.g. 'top1', 'top5') or a sequence of class ids."""
_SPELLING = "use 'topK' for the K best classes (e.g. 'top1', 'top5') or a list of class ids such as [281, 285]"


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float


@dataclass
class Explanation:
    """One image's prediction and the saliency of the explained classes."""

    source: str
    image: Image.Image = field(repr=False)  # upright RGB, at its original size
    scores: np.ndarray = field(repr=False)  # (K,) class probabilities (softmax, or sigmoid if exported so)
    top: list[Prediction]
    targets: list[Prediction]  # the explained classes, in the order of ``maps``
    maps: np.ndarray = field(repr=False)  # (T, h, w) in [0, 1] at the feature map's resolution
    timings: dict[str, float] = field(default_factory=dict)  # seconds, per image

    @cached_property
    def upsampled(self) -> np.ndarray:
        """(T, H, W): every map resized bilinearly to the original image's size."""
        width, height = self.image.size
        return pictures.upsample(self.maps, height, width)

    def upsample(self, index: int = 0) -> np.ndarray:
        """(H, W): target ``index``'s map at the image's size, without resizing the others."""
        if "upsampled" in self.__dict__:  # already computed for all
            return np.asarray(self.upsampled[self._index(index)])
        width, height = self.image.size
        return np.asarray(pictures.upsample(self.maps[self._index(index)][None], height, width)[0])

    def overlay(self, index: int = 0, alpha: float = 0.5, colormap: str = "turbo") -> Image.Image:
        """The photo with target ``index``'s map blended on top (only that map is resized)."""
        pictures.check_overlay(alpha, colormap)
        return pictures.overlay(self.image, self.upsample(index), alpha, colormap)

    def caption(self, index: int = 0) -> str:
        """'cat.jpg: tabby 81.2%': the file and target ``index``'s class (its first name) and score."""
        target = self.targets[self._index(index)]
        return f"{Path(self.source).name}: {target.label.split(',')[0]} {target.score * 100:.1f}%"

    def summary(self) -> dict[str, Any]:
        """JSON-ready: predictions, explained classes, timings (ms)."""
        return {
            "image": self.source,
            "size": list(self.image.size),
            "top": [vars(p) for p in self.top],
            "targets": [vars(p) for p in self.targets],
            "map_size": list(self.maps.shape[1:]),
            "timings_ms": {k: round(v * 1000, 3) for k, v in self.timings.items()},
        }

    def _index(self, index: int) -> int:
        count = len(self.maps)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -count <= index < count:
            raise OvxaiError(f"index= {index!r} is not one of the {count} explained classes",
                             f"use 0..{count - 1}, in the order of .targets")  # fmt: skip
        return int(index)


@dataclass
class Batch:
    """Images decoded and preprocessed into one input tensor: what :meth:`Explainer.prepare` makes and
    :meth:`Explainer.postprocess` turns into explanations once the model has run on ``tensor``."""

    sources: list[str]
    images: list[Image.Image] = field(repr=False)  # upright RGB, original sizes
    tensor: np.ndarray = field(repr=False)  # (B, 3, H, W); a fixed-batch model's last batch is zero-padded
    timings: list[dict[str, float]] = field(repr=False)  # per image: load, preprocess (seconds)

    def __len__(self) -> int:
        return len(self.sources)


def parse_targets(text: str) -> str | list[int]:
    """The text spelling (``ovxai explain --explain``, the service's ``?targets=``): 'top5' is the 5 best
    classes, '281' or '281,285' are class ids."""
    spelled = text.strip().lower()
    if re.fullmatch(r"top\d+", spelled):
        return spelled
    parts = [part.strip() for part in spelled.split(",")]
    if all(re.fullmatch(r"\d+", part) for part in parts):
        return [int(part) for part in parts]
    raise OvxaiError(f"targets '{text}' is neither topK nor class ids", "e.g. top1, top5, 281 or 281,285")


def check_targets(targets: Targets, classes: int | None) -> int | list[int]:
    """``targets`` checked against a model with ``classes`` classes (None: unknown until it runs): k for
    'topK', else the class ids. Errors instead of guesses: a bare int is refused as ambiguous, ids are
    never clamped."""
    if targets is None:
        return 1
    if isinstance(targets, str):
        match = re.fullmatch(r"top(\d+)", targets.strip().lower())
        if not match:
            raise OvxaiError(f"unknown targets= {targets!r}", _SPELLING)
        k = int(match[1])
        if k < 1:
            raise OvxaiError(f"targets= {targets!r} asks for no class", "use 'top1' or more")
        if classes is not None and k > classes:
            raise OvxaiError(
                f"targets= {targets!r} asks for {k} classes but the model has {classes}", f"use at most 'top{classes}'"
            )
        return k
    if isinstance(targets, (bool, np.bool_)):
        raise OvxaiError(f"targets= {targets} is not a choice of classes", _SPELLING)
    if isinstance(targets, (int, np.integer)):
        n = int(targets)
        if n < 0:
            raise OvxaiError(f"targets= {n} is not a choice of classes", _SPELLING)
        fix = f"use 'top{n}' for the {n} best classes or [{n}] for class id {n}" if n else "use [0] for class id 0"
        raise OvxaiError(f"targets= {n} is ambiguous", fix)
    try:
        items = list(targets)
    except TypeError:
        raise OvxaiError(f"targets= of type {type(targets).__name__} is not a choice of classes", _SPELLING) from None
    if not items:
        raise OvxaiError("targets= names no class", _SPELLING)
    ids: list[int] = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            shown = repr(item) if isinstance(item, str) else str(item)
            raise OvxaiError(f"targets= holds {shown}, which is not a class id", "class ids are whole numbers")
        ids.append(int(item))
    for class_id in ids:
        if class_id < 0 or (classes is not None and class_id >= classes):
            limits = f"the model has classes 0..{classes - 1}" if classes else "class ids start at 0"
            raise OvxaiError(f"class id {class_id} is out of range", limits)
    twice = next((c for i, c in enumerate(ids) if c in ids[:i]), None)
    if twice is not None:
        raise OvxaiError(f"class id {twice} is listed twice in targets=", "name each class once")
    return ids


class Reader:
    """Reads one model's outputs: its prediction output, class count (None: known once it has run), labels,
    score convention, whether the prediction is already probabilities, and which classes it maps."""

    def __init__(
        self,
        prediction: str,
        num_classes: int | None,
        labels: list[str] | None,
        score: str,
        probabilities: bool | None,
        explained: str | None,
    ) -> None:
        self.prediction, self.num_classes, self.labels = prediction, num_classes, labels
        self.score, self.probabilities, self.explained = score, probabilities, explained

    def explanations(
        self, batch: Batch, outputs: Outputs, wanted: int | list[int], top_k: int, inference_s: float
    ) -> list[Explanation]:
        """One explanation per image of ``batch``: the top ``top_k`` predictions and the ``wanted`` maps."""
        start = time.perf_counter()
        count = len(batch)
        if not count:
            return []
        raw = outputs[self.prediction]
        scores = self._probabilities(raw.reshape(len(raw), -1)[:count])
        if self.num_classes is None:  # a dynamic class count: the first chance to check
            wanted = check_targets(f"top{wanted}" if isinstance(wanted, int) else wanted, scores.shape[1])
        saliency = outputs[SALIENCY_OUTPUT][:count]
        if saliency.dtype == np.uint8:
            saliency = saliency.astype(np.float32) / 255
        top_k = min(top_k, scores.shape[1])
        mapped = outputs.get(CLASSES_OUTPUT)  # a model exported with explain= topK or ids maps only those
        results = []
        for i in range(count):
            order = best_first(scores[i], max(top_k, wanted if isinstance(wanted, int) else 1))
            ids = [int(k) for k in order[:wanted]] if isinstance(wanted, int) else wanted
            top = [self._prediction(int(k), scores[i]) for k in order[:top_k]]
            explained = [self._prediction(k, scores[i]) for k in ids]
            rows = ids if mapped is None else self._rows(mapped[i], ids)
            results.append(Explanation(batch.sources[i], batch.images[i], scores[i], top, explained, saliency[i, rows]))
        post_s = (time.perf_counter() - start) / count
        for result, timings in zip(results, batch.timings, strict=True):
            result.timings = {**timings, "inference": inference_s / count, "postprocess": post_s}
        return results

    def _rows(self, mapped: np.ndarray, ids: list[int]) -> list[int]:
        """Where each wanted class's map is in a model that maps only some classes."""
        where = {int(k): row for row, k in enumerate(mapped)}
        missing = [k for k in ids if k not in where]
        if missing:
            raise OvxaiError(
                f"class {missing[0]} has no map: the model maps only classes {sorted(where)} of this image "
                f"(exported with explain {self.explained or 'topK'})",
                "ask for those classes (targets=top1 ...), or re-export with --explain all",
            )
        return [where[k] for k in ids]

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.float64)
        if self.probabilities:
            return raw  # recorded at export: the prediction output already is probabilities
        guess = self.probabilities is None and self.score != "sigmoid"  # not recorded (older exports)
        if guess and raw.min() >= 0 and np.abs(raw.sum(1) - 1).max() < 1e-3:
            return raw
        if self.score == "sigmoid":
            sigmoid: np.ndarray = 1 / (1 + np.exp(-raw))
            return sigmoid
        shifted = np.exp(raw - raw.max(1, keepdims=True))
        softmax: np.ndarray = shifted / shifted.sum(1, keepdims=True)
        return softmax

    def _prediction(self, class_id: int, scores: np.ndarray) -> Prediction:
        label = self.labels[class_id] if self.labels and class_id < len(self.labels) else f"class {class_id}"
        return Prediction(class_id, label, float(scores[class_id]))


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (a partial sort: K can be large)."""
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]
