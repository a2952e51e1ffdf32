"""The model a server replica or a collection actor loads: a file or URL and how to load it."""

from __future__ import annotations

from dataclasses import dataclass

from ovxai.conventions import ChannelOrder
from ovxai.runtime import Explainer


@dataclass(frozen=True)
class ModelSource:
    """A patched model and how to load it, as :meth:`Explainer.load` takes it: the part of ``ovxai serve``'s
    and ``ovxai explain --ray``'s options that every replica or actor loads the same way."""

    model: str
    device: str = "CPU"
    backend: str = "auto"
    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    channel_order: ChannelOrder | None = None

    def load(self) -> Explainer:
        return Explainer.load(
            self.model, self.backend, self.device, labels=self.labels, mean=self.mean, scale=self.scale,
            channel_order=self.channel_order,
        )  # fmt: skip
