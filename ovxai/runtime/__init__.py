"""The thin runtime: load a patched model anywhere, get predictions and saliency pictures.

Needs numpy, pillow and one backend (openvino or onnxruntime) — never torch, onnx, cv2 or
matplotlib, so it runs in inference services and on edge devices as is::

    from ovxai.runtime import Explainer

    explainer = Explainer.load("resnet50_xai.xml", device="AUTO")
    for result in explainer.explain(["cat.jpg", "dog.png"], targets=2):
        print(result.top[0], result.maps.shape)
        result.overlay(0).save("cat_saliency.png")
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ovxai.errors import OvxaiError
from ovxai.hook import FEATURE_OUTPUT, SALIENCY_OUTPUT
from ovxai.metadata import ModelInfo
from ovxai.runtime import metadata, pictures
from ovxai.runtime.backends import Outputs, Session, open_session
from ovxai.runtime.images import ImageError, ImageInput, Preprocessing, image_files, load_rgb

__all__ = ["Explainer", "Explanation", "ImageError", "Prediction", "Preprocessing", "image_files"]

DEFAULT_SIZE = 224  # for models whose input height and width are dynamic
Targets = Union[None, str, int, Sequence[int]]  # noqa: UP007 - a runtime alias


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
        """(T, H, W): each map resized bilinearly to the original image's size."""
        width, height = self.image.size
        return pictures.upsample(self.maps, height, width)

    def overlay(self, index: int = 0, alpha: float = 0.5, colormap: str = "turbo") -> Image.Image:
        """The photo with target ``index``'s map blended on top."""
        return pictures.overlay(self.image, self.upsampled[index], alpha, colormap)

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


class Explainer:
    """A model exported by ``ovxai export``, loaded in OpenVINO or ONNX Runtime."""

    def __init__(
        self, session: Session, preprocessing: Preprocessing, labels: Sequence[str] | None, score: str = "softmax"
    ) -> None:
        if SALIENCY_OUTPUT not in session.output_names:
            raise OvxaiError(
                f"the model has no '{SALIENCY_OUTPUT}' output (outputs: {', '.join(session.output_names)})",
                "patch it first: ovxai export --model MODEL --output MODEL_xai.xml",
            )
        self.session = session
        self.preprocessing = preprocessing
        self.prediction = next(n for n in session.output_names if n not in (SALIENCY_OUTPUT, FEATURE_OUTPUT))
        self.labels = list(labels) if labels else None
        self.score = score
        self.static_batch = session.input_shape[0]

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: str = "auto",
        device: str = "CPU",
        providers: Sequence[str] | None = None,
        *,
        labels: str | Path | Sequence[str] | None = None,
        size: int | tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        rgb: bool | None = None,
        config: dict[str, Any] | None = None,
    ) -> Explainer:
        """Load ``path`` (.xml or .onnx). Preprocessing and labels come from the model's metadata
        (written by ``ovxai export --labels --mean --scale --rgb``) unless given here."""
        session = open_session(Path(path), backend, device, providers, config)
        info = metadata.from_entries(session.metadata)
        if isinstance(labels, (str, Path)):
            labels = ModelInfo.from_options(labels=Path(labels)).labels
        _, _, height, width = (session.input_shape + [None] * 4)[:4]
        if size is None:
            size = (height or DEFAULT_SIZE, width or DEFAULT_SIZE)
        elif isinstance(size, int):
            size = (size, size)
        if height and width and tuple(size) != (height, width):
            raise OvxaiError(f"the model takes {height} x {width} images, not {size[0]} x {size[1]}", "drop size=")
        prep = Preprocessing(
            tuple(size),  # type: ignore[arg-type]
            _three(mean or info.mean, 0.0),
            _three(scale or info.scale, 1.0),
            rgb if rgb is not None else info.rgb is not False,
        )
        return cls(session, prep, labels or info.labels, session.metadata.get("ovxai.score", "softmax"))

    # -- explaining ---------------------------------------------------------------------------------

    def explain(self, images: ImageInput | Sequence[ImageInput], targets: Targets = "top1", top_k: int = 5
                ) -> list[Explanation]:  # fmt: skip
        """Predict and explain; a bad image raises :class:`ImageError` (see ``explain_many`` to skip)."""
        items = [images] if isinstance(images, (str, Path, bytes, Image.Image, np.ndarray)) else list(images)
        loaded = [self._load(item) for item in items]
        results: list[Explanation] = []
        for chunk in _chunks(loaded, self.static_batch or len(loaded) or 1):
            batch, prep_s = self._batch(chunk)
            start = time.perf_counter()
            outputs = self.session.infer(batch)
            results += self._results(chunk, outputs, targets, top_k, prep_s, time.perf_counter() - start)
        return results

    def explain_many(
        self,
        images: Iterable[ImageInput],
        targets: Targets = "top1",
        top_k: int = 5,
        jobs: int = 2,
        on_error: Callable[[ImageInput, ImageError], None] | None = None,
    ) -> Iterator[Explanation]:
        """Explain a stream of images with ``jobs`` requests in flight (OpenVINO AsyncInferQueue or
        ONNX Runtime threads). Bad images go to ``on_error`` and are skipped (raised if it is None)."""

        def prepared() -> Iterator[tuple[list[tuple[str, Image.Image, float]], np.ndarray]]:
            good: list[tuple[str, Image.Image, float]] = []
            for item in images:
                try:
                    good.append(self._load(item))
                except ImageError as exc:
                    if on_error is None:
                        raise
                    on_error(item, exc)
                    continue
                if len(good) == (self.static_batch or 1):
                    yield good, self._batch(good)[0]
                    good = []
            if good:
                yield good, self._batch(good)[0]

        start = time.perf_counter()
        for chunk, outputs in self.session.infer_many(prepared(), jobs):
            elapsed = time.perf_counter() - start
            yield from self._results(chunk, outputs, targets, top_k, 0.0, elapsed)
            start = time.perf_counter()

    def _load(self, item: ImageInput) -> tuple[str, Image.Image, float]:
        start = time.perf_counter()
        name, image = load_rgb(item)
        return name, image, time.perf_counter() - start

    def _batch(self, chunk: list[tuple[str, Image.Image, float]]) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        arrays = [self.preprocessing(image) for _, image, _ in chunk]
        if self.static_batch and len(arrays) < self.static_batch:  # a fixed-batch model: pad the last one
            arrays += [np.zeros_like(arrays[0])] * (self.static_batch - len(arrays))
        return np.stack(arrays), time.perf_counter() - start

    def _results(self, chunk: list[tuple[str, Image.Image, float]], outputs: Outputs, targets: Targets, top_k: int,
                 prep_s: float, infer_s: float) -> list[Explanation]:  # fmt: skip
        start = time.perf_counter()
        scores = self._probabilities(outputs[self.prediction].reshape(len(outputs[self.prediction]), -1))
        saliency = outputs[SALIENCY_OUTPUT]
        if saliency.dtype == np.uint8:
            saliency = saliency.astype(np.float32) / 255
        results = []
        for i, (name, image, _) in enumerate(chunk):
            order = _top(scores[i], max(top_k, targets if isinstance(targets, int) else 1))
            wanted = self._targets(targets, order, scores.shape[1])
            top = [self._prediction(int(k), scores[i]) for k in order[:top_k]]
            explained = [self._prediction(k, scores[i]) for k in wanted]
            results.append(Explanation(name, image, scores[i], top, explained, saliency[i, wanted]))
        post_s = (time.perf_counter() - start) / len(chunk)
        for r, (_, _, load_s) in zip(results, chunk, strict=True):
            r.timings = {"load": load_s, "preprocess": prep_s / len(chunk), "inference": infer_s / len(chunk),
                         "postprocess": post_s}  # fmt: skip
        return results

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        raw = raw.astype(np.float64)
        if self.score == "sigmoid":
            return 1 / (1 + np.exp(-raw))
        if raw.min() >= 0 and np.abs(raw.sum(1) - 1).max() < 1e-3:
            return raw  # already probabilities
        shifted = np.exp(raw - raw.max(1, keepdims=True))
        return shifted / shifted.sum(1, keepdims=True)

    def _targets(self, targets: Targets, order: np.ndarray, classes: int) -> list[int]:
        if targets is None or targets == "top1":
            return [int(order[0])]
        if isinstance(targets, int) and not isinstance(targets, bool):
            if targets < 1:
                raise OvxaiError(f"targets={targets} asks for no class", "use k >= 1, 'top1' or class ids")
            return [int(k) for k in order[:targets]]
        if isinstance(targets, str):
            raise OvxaiError(f"unknown targets '{targets}'", "use 'top1', a number k, or a list of class ids")
        wanted = [int(t) for t in targets]
        bad = [t for t in wanted if not 0 <= t < classes]
        if bad:
            raise OvxaiError(f"class id {bad[0]} is out of range", f"the model has classes 0..{classes - 1}")
        return wanted

    def _prediction(self, class_id: int, scores: np.ndarray) -> Prediction:
        label = self.labels[class_id] if self.labels and class_id < len(self.labels) else f"class {class_id}"
        return Prediction(class_id, label, float(scores[class_id]))


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (a partial sort: K can be large)."""
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


def _three(values: Sequence[float] | None, default: float) -> tuple[float, float, float]:
    if values is None:
        return (default,) * 3  # type: ignore[return-value]
    values = tuple(float(v) for v in values)
    return values * 3 if len(values) == 1 else values[:3]  # type: ignore[return-value]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def contact_sheet(results: Sequence[Explanation], columns: int = 4, tile: int = 256) -> Image.Image:
    """All targets of all results as captioned overlays on one picture."""
    tiles = [
        (r.overlay(i), f"{Path(r.source).name}: {t.label.split(',')[0]} {t.score * 100:.1f}%")
        for r in results
        for i, t in enumerate(r.targets)
    ]
    return pictures.contact_sheet(tiles, columns=min(columns, max(1, len(tiles))), tile=tile)
