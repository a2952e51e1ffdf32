"""What a deployed model says about itself, written at export and read back by the runtime: one codec.

Entries are ``(section, key) -> text`` pairs. Section ``model_info`` holds the keys OpenVINO's Model
API reads (so ``Model.create_model("patched.xml")`` works); section ``ovxai`` holds what Model API
has no key for. Where they live in each format:

- OpenVINO IR: ``rt_info[section][key]``.
- ONNX: ``metadata_props`` with the key ``"section key"`` (space-separated: Model API's ONNX layout).
  ONNX Runtime returns them in ``custom_metadata_map``; OpenVINO reading an ONNX file puts them in
  ``rt_info["framework"]``.

Labels: Model API splits its label string on whitespace, so its copy has spaces replaced by
underscores; the exact names are kept as JSON in the ``ovxai`` section and preferred on reading.

This module imports no engine and no onnx: the runtime reads through it too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ovxai.conventions import (
    CHANNEL_ORDERS,
    METHODS,
    MODEL_INFO_SECTION,
    OVXAI_SECTION,
    SCORES,
    ChannelOrder,
    Method,
    Score,
)
from ovxai.errors import OvxaiError

Entries = dict[tuple[str, str], str]
"""(section, key) -> value, the format-neutral form of a model's metadata."""

ONNX_FRAMEWORK_SECTION = "framework"  # where OpenVINO puts an ONNX file's metadata_props


@dataclass(frozen=True)
class ModelInfo:
    """Class names, preprocessing and how the hook scored classes; None: not recorded."""

    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None  # per channel, subtracted from 0..255 pixels
    scale: tuple[float, ...] | None = None  # per channel, divides after the mean
    channel_order: ChannelOrder | None = None  # what the network expects (Model API feeds BGR, reverses for rgb)
    score: Score | None = None  # how the hook scored each masked copy
    probabilities: bool | None = None  # the prediction output is already softmax/sigmoid probabilities
    explained: str | None = None  # which classes have maps: 'all', 'topK' or ids '281,285' (saliency_classes)
    method: Method | None = None  # what computes the maps: recipro, or a gradient CAM (None: recipro, older exports)
    steps: int | None = None  # integrated-gradcam: its steps from the black image

    def __post_init__(self) -> None:
        for name in ("mean", "scale"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) not in (1, 3):
                raise OvxaiError(f"{name}= takes 1 or 3 values, got {len(values)}", "one per channel, or one for all")
            if not all(math.isfinite(v) for v in values):
                raise OvxaiError(f"{name}= {_join(values)} is not finite", f"give real numbers as {name}=")
            object.__setattr__(self, name, tuple(float(v) for v in values) * (3 if len(values) == 1 else 1))
        if self.scale is not None and any(v == 0 for v in self.scale):
            raise OvxaiError(f"scale= {_join(self.scale)} divides by zero", "use e.g. scale=58.395,57.12,57.375")
        if self.channel_order is not None and self.channel_order not in CHANNEL_ORDERS:
            raise OvxaiError(
                f"unknown channel_order= {self.channel_order!r}", f"use one of: {', '.join(CHANNEL_ORDERS)}"
            )
        if self.score is not None and self.score not in SCORES:
            raise OvxaiError(f"unknown score= {self.score!r}", f"use one of: {', '.join(SCORES)}")
        if self.method is not None and self.method not in METHODS:
            raise OvxaiError(f"unknown method= {self.method!r}", f"use one of: {', '.join(METHODS)}")
        if self.labels is not None and not self.labels:
            raise OvxaiError("labels= is empty", "give one class name per class")
        if self.labels is not None and not all(label.strip() for label in self.labels):
            blank = next(i for i, label in enumerate(self.labels) if not label.strip())
            raise OvxaiError(f"labels= has a blank name at class {blank}", "give every class a name")

    @classmethod
    def from_options(
        cls,
        labels: Path | None = None,
        mean: str | None = None,
        scale: str | None = None,
        channel_order: ChannelOrder | None = None,
    ) -> ModelInfo:
        """From command-line text: a labels file and comma- or space-separated numbers."""
        return cls(
            read_labels(labels) if labels else None, _floats(mean, "mean"), _floats(scale, "scale"), channel_order
        )

    def check(self, num_classes: int | None) -> None:
        if self.labels is not None and num_classes is not None and len(self.labels) != num_classes:
            raise OvxaiError(
                f"the labels file has {len(self.labels)} names but the model predicts {num_classes} classes",
                "give one name per class, one per line",
            )

    # -- the codec ----------------------------------------------------------------------------------

    def entries(self) -> Entries:
        """Model API's keys in its formats (booleans 'True'/'False', lists space-joined), then ovxai's."""
        out: Entries = {(MODEL_INFO_SECTION, "model_type"): "Classification"}
        if self.labels is not None:
            out[MODEL_INFO_SECTION, "labels"] = " ".join("_".join(label.split()) for label in self.labels)
            out[OVXAI_SECTION, "labels"] = json.dumps(list(self.labels), ensure_ascii=False)
        if self.mean is not None:
            out[MODEL_INFO_SECTION, "mean_values"] = _join(self.mean)
        if self.scale is not None:
            out[MODEL_INFO_SECTION, "scale_values"] = _join(self.scale)
        if self.channel_order is not None:
            out[MODEL_INFO_SECTION, "reverse_input_channels"] = str(self.channel_order == "rgb")
        if self.score is not None:
            out[OVXAI_SECTION, "score"] = self.score
        if self.probabilities is not None:
            out[OVXAI_SECTION, "probabilities"] = str(self.probabilities)
        if self.explained is not None:
            out[OVXAI_SECTION, "explain"] = self.explained
        if self.method is not None:
            out[OVXAI_SECTION, "method"] = self.method
        if self.steps is not None:
            out[OVXAI_SECTION, "steps"] = str(self.steps)
        return out

    @classmethod
    def from_entries(cls, entries: Mapping[tuple[str, str], str]) -> ModelInfo:
        """The inverse of :meth:`entries`; also reads Model API metadata written by other tools."""

        def get(section: str, key: str) -> str | None:
            return entries.get((section, key))

        labels: tuple[str, ...] | None = None
        exact = get(OVXAI_SECTION, "labels")
        if exact is not None:
            labels = tuple(str(label) for label in json.loads(exact))
        elif get(MODEL_INFO_SECTION, "labels"):
            labels = tuple(str(get(MODEL_INFO_SECTION, "labels")).split())
        reverse = get(MODEL_INFO_SECTION, "reverse_input_channels")
        probabilities = get(OVXAI_SECTION, "probabilities")
        score, method, steps = (get(OVXAI_SECTION, key) for key in ("score", "method", "steps"))
        return cls(
            labels=labels,
            mean=_floats(get(MODEL_INFO_SECTION, "mean_values"), "mean"),
            scale=_floats(get(MODEL_INFO_SECTION, "scale_values"), "scale"),
            channel_order=None if reverse is None else ("rgb" if _true(reverse) else "bgr"),
            score=next((s for s in SCORES if s == score), None),
            probabilities=None if probabilities is None else _true(probabilities),
            explained=get(OVXAI_SECTION, "explain"),
            method=next((m for m in METHODS if m == method), None),
            steps=int(steps) if steps is not None and steps.strip().isdigit() else None,
        )

    def replace(self, **changes: Any) -> ModelInfo:
        return type(self)(**{f.name: changes.get(f.name, getattr(self, f.name)) for f in fields(self)})


# -- reading from the engines ----------------------------------------------------------------------


def onnx_key(section: str, key: str) -> str:
    """The ``metadata_props`` key of an entry (Model API's ONNX layout)."""
    return f"{section} {key}"


def _from_onnx_props(props: Mapping[str, str]) -> Entries:
    entries: Entries = {}
    for name, value in props.items():
        section, _, key = name.partition(" ")
        if section in (MODEL_INFO_SECTION, OVXAI_SECTION) and key:
            entries[section, key] = value
    return entries


def as_parameters(info: ModelInfo) -> dict[str, str]:
    """The entries as flat text parameters keyed like ONNX ``metadata_props`` (``"model_info labels"``): what
    ``ovxai serve`` puts in the ``parameters`` of its Open Inference Protocol model metadata."""
    return {onnx_key(section, key): value for (section, key), value in info.entries().items()}


def read_parameters(parameters: Mapping[str, object]) -> ModelInfo:
    """The inverse of :func:`as_parameters`, from a served model's metadata (other parameters are ignored)."""
    return ModelInfo.from_entries(_from_onnx_props({k: v for k, v in parameters.items() if isinstance(v, str)}))


def read_onnx_props(props: Mapping[str, str]) -> ModelInfo:
    """From an ONNX model's ``metadata_props``."""
    return ModelInfo.from_entries(_from_onnx_props(props))


def read_onnxruntime(session: Any) -> ModelInfo:
    """From an ``onnxruntime.InferenceSession``."""
    return ModelInfo.from_entries(_from_onnx_props(dict(session.get_modelmeta().custom_metadata_map)))


def read_openvino(model: Any) -> ModelInfo:
    """From an ``openvino.Model`` read from an IR (rt_info sections) or from an ONNX file."""
    entries: Entries = {}
    for section in (MODEL_INFO_SECTION, OVXAI_SECTION):
        if model.has_rt_info([section]):
            for key in model.get_rt_info([section]).astype(dict):
                entries[section, key] = model.get_rt_info([section, key]).astype(str)
    if model.has_rt_info([ONNX_FRAMEWORK_SECTION]):
        props = model.get_rt_info([ONNX_FRAMEWORK_SECTION]).astype(dict)
        entries |= _from_onnx_props({k: model.get_rt_info([ONNX_FRAMEWORK_SECTION, k]).astype(str) for k in props})
    return ModelInfo.from_entries(entries)


# -- text ------------------------------------------------------------------------------------------


def read_labels(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read labels file '{path}' ({type(exc).__name__})"
        raise OvxaiError(problem, "give a UTF-8 text file, one class name per line") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise OvxaiError(f"labels file '{path}' is empty", "one class name per line, line i = class i")
    return labels


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise OvxaiError(f"{name}= '{text}' is not a list of numbers", f"e.g. {name}=123.675,116.28,103.53") from None


def _join(values: tuple[float, ...]) -> str:
    return " ".join(repr(v) for v in values)  # repr: the shortest text that reads back to the same float


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "yes", "1")
