"""``Explainer``: a patched model loaded on a backend, from images to predictions and maps."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from numbers import Real
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ovxai.conventions import CLASSES_OUTPUT, HOOK_OUTPUTS, SALIENCY_OUTPUT, ChannelOrder
from ovxai.errors import OvxaiError
from ovxai.metadata import read_labels
from ovxai.runtime import pictures
from ovxai.runtime.backends import Outputs, Session, open_session
from ovxai.runtime.images import (
    ONE_IMAGE,
    ImageError,
    ImageInput,
    Preprocessing,
    load_rgb,
)

DEFAULT_SIZE = 224  # for models whose input height and width are dynamic
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


def _check_top_k(top_k: int) -> int:
    if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise OvxaiError(f"top_k= {top_k} reports no prediction", "use top_k=1 or more")
    return int(top_k)


class Explainer:
    """A model exported by ``ovxai export``, loaded in OpenVINO or ONNX Runtime."""

    def __init__(
        self,
        session: Session,
        preprocessing: Preprocessing,
        labels: Sequence[str] | None,
        score: str = "softmax",
        probabilities: bool | None = None,
        preprocessing_source: dict[str, str] | None = None,
        explained: str | None = None,
    ) -> None:
        self.session = session
        self.preprocessing = preprocessing
        self.preprocessing_source = preprocessing_source or {}
        self.prediction = _prediction_output(session)
        self.num_classes = _num_classes(session, self.prediction)  # None: only known once it has run
        self.labels = list(labels) if labels else None
        if self.labels and self.num_classes is not None and len(self.labels) != self.num_classes:
            raise OvxaiError(
                f"there are {len(self.labels)} labels but the model predicts {self.num_classes} classes",
                "give one name per class, in class order",
            )
        self.score = score
        self.probabilities = probabilities  # None: not recorded at export, guessed from the values
        self.explained = explained  # which classes the model maps (recorded at export): all, topK or ids
        self.method = session.info.method or "recipro"  # what computes the maps (recorded at export)
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
        mean: float | Sequence[float] | None = None,
        scale: float | Sequence[float] | None = None,
        channel_order: ChannelOrder | None = None,
        config: dict[str, Any] | None = None,
    ) -> Explainer:
        """Load ``path`` (.xml or .onnx), or use the model an inference server serves at a URL
        (``http://host:port/v2/models/NAME``: any Open Inference Protocol server, through ``tritonclient``;
        images are preprocessed here). Labels and preprocessing come from the model's metadata (written
        by ``ovxai export --labels --mean --scale --channel-order``; ``ovxai serve`` passes them on in its
        model metadata); arguments given here win.

        Preprocessing is never guessed: a model that records neither mean nor scale needs ``mean=`` and
        ``scale=`` (``mean=0, scale=1`` for a network that takes raw 0..255 pixels). One recorded alone
        gets the neutral value for the other, as OpenVINO's Model API does. ``preprocessing_source`` and
        :meth:`describe_preprocessing` say where each value came from."""
        session = open_session(path, backend, device, providers, config)  # a file, or a model URL
        _prediction_output(session)  # not a patched model: say so before asking for its preprocessing
        info = session.info
        if isinstance(labels, (str, Path)):
            labels = read_labels(Path(labels))
        source: dict[str, str] = {}
        _, _, height, width = (session.input_shape + [None] * 4)[:4]
        hw: tuple[int, ...]
        if size is not None:
            hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
            source["size"] = "arguments"
            if height and width and hw != (height, width):
                raise OvxaiError(f"the model takes {height} x {width} images, not {' x '.join(map(str, hw))}",
                                 "drop size=")  # fmt: skip
        elif height and width:
            hw, source["size"] = (height, width), "model input shape"
        else:
            hw, source["size"] = (DEFAULT_SIZE, DEFAULT_SIZE), "default for a model of any size"
        mean_v, source["mean"] = _given(mean, info.mean)
        scale_v, source["scale"] = _given(scale, info.scale)
        if mean_v is None and scale_v is None:
            raise OvxaiError(
                f"'{path}' records no preprocessing (mean, scale) and none was given",
                "pass mean= and scale= as the network was trained (mean=0 scale=1 if it takes raw 0..255 pixels), "
                "or export it with --mean and --scale",
            )
        if mean_v is None:
            mean_v, source["mean"] = (0.0,), "neutral, only a scale recorded"
        if scale_v is None:
            scale_v, source["scale"] = (1.0,), "neutral, only a mean recorded"
        order, source["channel_order"] = _given(channel_order, info.channel_order)
        if order is None:
            order, source["channel_order"] = "rgb", "default, none recorded"
        prep = Preprocessing(hw, mean_v, scale_v, order)  # type: ignore[arg-type]
        score = info.score or "softmax"
        return cls(session, prep, labels or info.labels, score, info.probabilities, source, info.explained)

    def describe_preprocessing(self) -> str:
        """What ``prepare`` does to each image and where each setting came from, in one line."""
        by_source: dict[str, list[str]] = {}
        for what, source in self.preprocessing_source.items():
            by_source.setdefault(source, []).append(what.replace("_", " "))
        origin = "; ".join(f"{', '.join(whats)}: {source}" for source, whats in by_source.items())
        return f"{self.preprocessing.describe()}" + (f" ({origin})" if origin else "")

    # -- the steps ----------------------------------------------------------------------------------

    def prepare(self, images: ImageInput | Sequence[ImageInput]) -> Batch:
        """Decode and preprocess ``images`` into one input batch (ImageError for a bad one)."""
        items = [images] if isinstance(images, ONE_IMAGE) else list(images)
        return self._assemble([self._load(item) for item in items])

    def infer(self, batch: Batch) -> Outputs:
        """Run the model on a prepared batch (synchronously, one request)."""
        return self.session.infer(batch.tensor)

    def postprocess(
        self, batch: Batch, outputs: Outputs, targets: Targets = "top1", top_k: int = 5, inference_s: float = 0.0
    ) -> list[Explanation]:
        """The model's outputs for ``batch`` as explanations: top ``top_k`` predictions (at most the number
        of classes) and the maps of ``targets``. ``inference_s`` (the batch's inference time) is shared out
        to the images' ``timings``."""
        wanted = check_targets(targets, self.num_classes)
        return self._explanations(batch, outputs, wanted, _check_top_k(top_k), inference_s)

    # -- explaining ---------------------------------------------------------------------------------

    def explain(
        self, images: ImageInput | Sequence[ImageInput], targets: Targets = "top1", top_k: int = 5
    ) -> list[Explanation]:
        """Predict and explain; a bad image raises :class:`ImageError` (see ``explain_many`` to skip)."""
        wanted, top_k = check_targets(targets, self.num_classes), _check_top_k(top_k)
        items = [images] if isinstance(images, ONE_IMAGE) else list(images)
        loaded = [self._load(item) for item in items]  # every image decoded before any inference
        results: list[Explanation] = []
        size = self.static_batch or max(len(loaded), 1)  # one batch, unless the model's batch is fixed
        for start in range(0, len(loaded), size):
            batch = self._assemble(loaded[start : start + size])
            began = time.perf_counter()
            outputs = self.session.infer(batch.tensor)
            results += self._explanations(batch, outputs, wanted, top_k, time.perf_counter() - began)
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
        ONNX Runtime threads). Bad images go to ``on_error`` and are skipped (raised if it is None).

        Arguments are checked here, before any image is read or request started. Stopping early (an
        exception, ``break``, ``close()``) waits for the requests in flight."""
        wanted, top_k = check_targets(targets, self.num_classes), _check_top_k(top_k)
        if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
            raise OvxaiError(f"jobs= {jobs} runs no request", "use jobs=1 or more")
        if isinstance(images, ONE_IMAGE):  # a path or an array is one image, not a sequence of them
            images = [images]
        return self._stream(images, wanted, top_k, int(jobs), on_error)

    def _stream(
        self,
        images: Iterable[ImageInput],
        wanted: int | list[int],
        top_k: int,
        jobs: int,
        on_error: Callable[[ImageInput, ImageError], None] | None,
    ) -> Iterator[Explanation]:
        def batches() -> Iterator[tuple[Batch, np.ndarray]]:
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
                    batch = self._assemble(good)
                    yield batch, batch.tensor
                    good = []
            if good:
                batch = self._assemble(good)
                yield batch, batch.tensor

        # closing(): the engine's generator waits for its requests as soon as this one stops, not
        # whenever a traceback that holds it is freed (possibly at interpreter exit: an abort).
        with closing(self.session.infer_many(batches(), jobs)) as stream:
            for batch, outputs, seconds in stream:
                yield from self._explanations(batch, outputs, wanted, top_k, seconds)

    def _load(self, item: ImageInput) -> tuple[str, Image.Image, float]:
        start = time.perf_counter()
        name, image = load_rgb(item)
        return name, image, time.perf_counter() - start

    def _assemble(self, loaded: list[tuple[str, Image.Image, float]]) -> Batch:
        arrays, timings = [], []
        for _, image, load_s in loaded:
            start = time.perf_counter()
            arrays.append(self.preprocessing(image))
            timings.append({"load": load_s, "preprocess": time.perf_counter() - start})
        if not arrays:
            height, width = self.preprocessing.size
            arrays.append(np.zeros((3, height, width), np.float32))  # an empty call still has a valid tensor
        if self.static_batch and len(arrays) < self.static_batch:  # a fixed-batch model: pad the last one
            arrays += [np.zeros_like(arrays[0])] * (self.static_batch - len(arrays))
        return Batch([n for n, _, _ in loaded], [i for _, i, _ in loaded], np.stack(arrays), timings)

    def _explanations(
        self, batch: Batch, outputs: Outputs, wanted: int | list[int], top_k: int, inference_s: float
    ) -> list[Explanation]:
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
            order = _top(scores[i], max(top_k, wanted if isinstance(wanted, int) else 1))
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


def _prediction_output(session: Session) -> str:
    """The class-score output of a patched model, or OvxaiError saying why it is not one."""
    if SALIENCY_OUTPUT not in session.output_names:
        raise OvxaiError(
            f"the model has no '{SALIENCY_OUTPUT}' output (outputs: {', '.join(session.output_names)})",
            "patch it first: ovxai export --model MODEL --output MODEL_xai.xml",
        )
    prediction = [n for n in session.output_names if n not in HOOK_OUTPUTS]
    if not prediction:
        raise OvxaiError("the model has no prediction output beside its saliency map", "re-export the model")
    return prediction[0]


def _given(argument: Any, recorded: Any) -> tuple[Any, str]:
    """The caller's value, else the model's: (value, where it came from); a number means one for all."""
    if argument is not None:
        return ((argument,) if isinstance(argument, Real) else argument), "arguments"
    return recorded, "model metadata"


def _num_classes(session: Session, prediction: str) -> int | None:
    """K from the saliency map (B, K, H, W) or the prediction's non-batch dimensions, when static."""
    saliency = session.output_shapes.get(SALIENCY_OUTPUT, [])
    if len(saliency) > 1 and saliency[1] and CLASSES_OUTPUT not in session.output_names:
        return saliency[1]
    dims = session.output_shapes.get(prediction, [])[1:]
    return int(np.prod(dims)) if dims and all(dims) else None  # type: ignore[arg-type]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (a partial sort: K can be large)."""
    k = min(k, len(scores))
    best = np.argpartition(-scores, k - 1)[:k]
    return best[np.argsort(-scores[best], kind="stable")]


def contact_sheet(results: Sequence[Explanation], columns: int = 4, tile: int = 256) -> Image.Image:
    """All targets of all results as captioned overlays on one picture."""
    tiles = [
        (r.overlay(i), f"{Path(r.source).name}: {t.label.split(',')[0]} {t.score * 100:.1f}%")
        for r in results
        for i, t in enumerate(r.targets)
    ]
    return pictures.contact_sheet(tiles, columns=min(columns, max(1, len(tiles))), tile=tile)
