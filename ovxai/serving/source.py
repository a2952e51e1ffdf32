"""The model a server replica or a collection actor loads: a file or URL and how to load it."""

from __future__ import annotations

from dataclasses import dataclass

from ovxai.conventions import ChannelOrder
from ovxai.errors import OvxaiError
from ovxai.runtime import Explainer
from ovxai.runtime.backends import is_model_url


@dataclass(frozen=True)
class ModelSource:
    """A patched model and how to load it, as :meth:`Explainer.load` takes it: the part of ``ovxai serve``'s
    and ``ovxai explain --ray``'s options that every replica or actor loads the same way. ``device`` applies
    to a model file (a URL's server chose its own: any other than the default CPU is refused), ``timeout``
    (None: the runtime's default) to a model URL."""

    model: str
    device: str = "CPU"
    backend: str = "auto"
    labels: tuple[str, ...] | None = None
    mean: tuple[float, ...] | None = None
    scale: tuple[float, ...] | None = None
    channel_order: ChannelOrder | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if is_model_url(self.model) and self.device != "CPU":
            raise OvxaiError(f"device= {self.device} means nothing for a model URL", "drop device=")

    def load(self) -> Explainer:
        device = None if is_model_url(self.model) else self.device
        return Explainer.load(
            self.model, self.backend, device, labels=self.labels, mean=self.mean, scale=self.scale,
            channel_order=self.channel_order, timeout=self.timeout,
        )  # fmt: skip
