"""``Explainer``: a patched model loaded on a backend, from images to predictions and maps."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ovxai.conventions import CLASSES_OUTPUT, HOOK_OUTPUTS, SALIENCY_OUTPUT, ChannelOrder
from ovxai.errors import OvxaiError
from ovxai.metadata import read_labels
from ovxai.runtime import pictures
from ovxai.runtime.ahead import default_workers, map_ahead
from ovxai.runtime.backends import Outputs, Session, open_session
from ovxai.runtime.images import (
    ONE_IMAGE,
    ImageError,
    ImageInput,
    Preprocessing,
    load_rgb,
)
from ovxai.runtime.reading import Batch, Explanation, Reader, Targets, check_targets

DEFAULT_SIZE = 224  # for models whose input height and width are dynamic


@dataclass
class _Loaded:
    """One image, decoded and preprocessed."""

    name: str
    image: Image.Image
    tensor: np.ndarray  # (3, H, W)
    timings: dict[str, float]  # load, preprocess (seconds)


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
        self.reader = Reader(self.prediction, self.num_classes, self.labels, score, probabilities, explained)

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: str = "auto",
        device: str | None = None,
        providers: Sequence[str] | None = None,
        *,
        labels: str | Path | Sequence[str] | None = None,
        size: int | tuple[int, int] | None = None,
        mean: float | Sequence[float] | None = None,
        scale: float | Sequence[float] | None = None,
        channel_order: ChannelOrder | None = None,
        config: dict[str, Any] | None = None,
        timeout: float | None = None,
        throughput: bool = False,
    ) -> Explainer:
        """Load ``path`` (.xml or .onnx), or use the model an inference server serves at a URL
        (``http://host:port/v2/models/NAME``: any Open Inference Protocol server, through ``tritonclient``;
        images are preprocessed here). Labels and preprocessing come from the model's metadata (written
        by ``ovxai export --labels --mean --scale --channel-order``; ``ovxai serve`` passes them on in its
        model metadata); arguments given here win.

        Preprocessing is never guessed: a model that records neither mean nor scale needs ``mean=`` and
        ``scale=`` (``mean=0, scale=1`` for a network that takes raw 0..255 pixels). One recorded alone
        gets the neutral value for the other, as OpenVINO's Model API does. ``preprocessing_source`` and
        :meth:`describe_preprocessing` say where each value came from.

        ``device`` (default CPU), ``providers``, ``config`` and ``throughput`` (for ``explain_many`` over many
        images: OpenVINO's THROUGHPUT hint) apply to a model file; ``timeout`` (seconds, default 30) to a URL:
        the longest wait for each answer of the server, never tried again after it ran out. Given for the
        other kind, each is an error rather than ignored."""
        session = open_session(path, backend, device, providers, config, timeout, throughput)  # a file or a URL
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
        return self._assemble(self._load_all(items))

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
        return self.reader.explanations(batch, outputs, wanted, _check_top_k(top_k), inference_s)

    # -- explaining ---------------------------------------------------------------------------------

    def explain(
        self, images: ImageInput | Sequence[ImageInput], targets: Targets = "top1", top_k: int = 5
    ) -> list[Explanation]:
        """Predict and explain; a bad image raises :class:`ImageError` (see ``explain_many`` to skip)."""
        wanted, top_k = check_targets(targets, self.num_classes), _check_top_k(top_k)
        items = [images] if isinstance(images, ONE_IMAGE) else list(images)
        loaded = self._load_all(items)  # every image decoded before any inference
        results: list[Explanation] = []
        size = self.static_batch or max(len(loaded), 1)  # one batch, unless the model's batch is fixed
        for start in range(0, len(loaded), size):
            batch = self._assemble(loaded[start : start + size])
            began = time.perf_counter()
            outputs = self.session.infer(batch.tensor)
            results += self.reader.explanations(batch, outputs, wanted, top_k, time.perf_counter() - began)
        return results

    def explain_many(
        self,
        images: Iterable[ImageInput],
        targets: Targets = "top1",
        top_k: int = 5,
        jobs: int = 2,
        on_error: Callable[[ImageInput, ImageError], None] | None = None,
    ) -> Generator[Explanation, None, None]:
        """Explain a stream of images with ``jobs`` requests in flight (OpenVINO AsyncInferQueue or
        ONNX Runtime threads). Bad images go to ``on_error`` and are skipped (raised if it is None).
        ``images`` is read a few items ahead of the engine (``jobs`` requests' worth, plus one per decoding
        thread), and those are decoded and preprocessed on threads while the requests run.

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
    ) -> Generator[Explanation, None, None]:
        size = self.static_batch or 1
        workers = default_workers()

        def batches() -> Iterator[tuple[Batch, np.ndarray]]:
            # Images are decoded and preprocessed on a few threads ahead of the engine (Pillow and numpy
            # work without the GIL): the requests in flight never wait for the next JPEG to be read.
            good: list[_Loaded] = []
            with closing(map_ahead(self._load, images, workers, workers + jobs * size, "ovxai-decode")) as loading:
                for item, future in loading:
                    try:
                        good.append(future.result())
                    except ImageError as exc:
                        if on_error is None:
                            raise
                        on_error(item, exc)
                        continue
                    if len(good) == size:
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
                yield from self.reader.explanations(batch, outputs, wanted, top_k, seconds)

    def _load(self, item: ImageInput) -> _Loaded:
        """One image decoded (``load``) and made the network's input (``preprocess``), each step timed."""
        start = time.perf_counter()
        name, image = load_rgb(item)
        loaded = time.perf_counter()
        tensor = self.preprocessing(image)
        timings = {"load": loaded - start, "preprocess": time.perf_counter() - loaded}
        return _Loaded(name, image, tensor, timings)

    def _load_all(self, items: Sequence[ImageInput]) -> list[_Loaded]:
        """Every image of ``items`` loaded (on a few threads when there are several), or the first ImageError."""
        if len(items) < 2:
            return [self._load(item) for item in items]
        workers = min(default_workers(), len(items))
        with closing(map_ahead(self._load, items, workers, workers, "ovxai-decode")) as loading:
            return [future.result() for _, future in loading]

    def _assemble(self, loaded: list[_Loaded]) -> Batch:
        arrays = [item.tensor for item in loaded]
        if not arrays:
            height, width = self.preprocessing.size
            arrays.append(np.zeros((3, height, width), np.float32))  # an empty call still has a valid tensor
        if self.static_batch and len(arrays) < self.static_batch:  # a fixed-batch model: pad the last one
            arrays += [np.zeros_like(arrays[0])] * (self.static_batch - len(arrays))
        return Batch([i.name for i in loaded], [i.image for i in loaded], np.stack(arrays), [i.timings for i in loaded])


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


def contact_sheet(results: Sequence[Explanation], columns: int = 4, tile: int = pictures.TILE) -> Image.Image:
    """All targets of all results as captioned overlays on one picture."""
    tiles = [(r.overlay(i), r.caption(i)) for r in results for i in range(len(r.targets))]
    return pictures.contact_sheet(tiles, columns=min(columns, max(1, len(tiles))), tile=tile)
