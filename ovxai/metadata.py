"""What a deployed model says about itself: class names and preprocessing.

Written into the exported model — OpenVINO rt_info ``model_info`` (the keys OpenVINO's Model API
reads, so ``Model.create_model("patched.xml")`` works) and ONNX ``metadata_props`` — and read back
by ovxai's runtime. Labels are also kept verbatim as JSON: Model API splits its label string on
whitespace, so its copy has spaces replaced by underscores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ovxai.errors import OvxaiError

SECTION = "model_info"
OVXAI_SECTION = "ovxai"


@dataclass(frozen=True)
class ModelInfo:
    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None  # per channel, subtracted from 0..255 pixels
    scale: tuple[float, ...] | None = None  # per channel, divides after the mean
    rgb: bool | None = None  # True: the network expects RGB (Model API feeds BGR and reverses)
    score: str | None = None  # how the hook scored classes: softmax, logits or sigmoid

    @classmethod
    def from_options(
        cls, labels: Path | None = None, mean: str | None = None, scale: str | None = None, rgb: bool | None = None
    ) -> ModelInfo:
        return cls(_read_labels(labels) if labels else None, _floats(mean, "--mean"), _floats(scale, "--scale"), rgb)

    def check(self, num_classes: int | None) -> None:
        if self.labels is not None and num_classes is not None and len(self.labels) != num_classes:
            raise OvxaiError(
                f"the labels file has {len(self.labels)} names but the model predicts {num_classes} classes",
                "give one name per class, one per line",
            )

    def model_api_entries(self) -> dict[str, str]:
        """rt_info ``model_info`` entries in Model API's formats (booleans 'True'/'False', lists space-joined)."""
        entries = {"model_type": "Classification"}
        if self.labels is not None:
            entries["labels"] = " ".join("_".join(label.split()) for label in self.labels)
        if self.mean is not None:
            entries["mean_values"] = " ".join(f"{v:g}" for v in self.mean)
        if self.scale is not None:
            entries["scale_values"] = " ".join(f"{v:g}" for v in self.scale)
        if self.rgb is not None:
            entries["reverse_input_channels"] = str(self.rgb)
        return entries

    def ovxai_entries(self) -> dict[str, str]:
        entries = {"labels": json.dumps(list(self.labels))} if self.labels is not None else {}
        if self.score is not None:
            entries["score"] = self.score
        return entries


def _read_labels(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read labels file '{path}' ({type(exc).__name__})"
        raise OvxaiError(problem, "give a UTF-8 text file, one class name per line") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise OvxaiError(f"labels file '{path}' is empty", "one class name per line, line i = class i")
    return labels


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        problem = f"{option} '{text}' is not a list of numbers"
        raise OvxaiError(problem, f"e.g. {option} 123.675,116.28,103.53") from None
    if len(values) not in (1, 3):
        raise OvxaiError(f"{option} takes 1 or 3 values, got {len(values)}", "one per channel, or one for all")
    return values * 3 if len(values) == 1 else values
