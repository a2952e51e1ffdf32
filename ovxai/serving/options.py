"""What ``ovxai serve`` serves and under which limits: one frozen record both hostings read."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovxai.errors import OvxaiError
from ovxai.serving.source import ModelSource

MAX_BODY = 20 * 1024 * 1024  # bytes: a request over this is refused from its headers, before it is read
MAX_PIXELS = 40_000_000  # an image over this is refused before it is decoded (a 9000 x 9000 PNG is 81 MP)
READ_TIMEOUT_S = 10.0  # a client that has not sent its whole body by then gets 408
MAX_IN_FLIGHT = 256 * 1024 * 1024  # bytes of requests (weighted, see protocol.memory_cost) admitted at once
MAX_RESPONSE = 32 * 1024 * 1024  # bytes: an answer that would be larger is refused before it is encoded


@dataclass(frozen=True)
class ServeOptions(ModelSource):
    """The model, its batching, replicas (Ray Serve only) and the limits that keep a server's memory bounded.

    ``max_batch_size`` 1 turns batching off; requests that arrive while an inference runs form the next
    batch together. ``batch_wait_ms`` makes a batch also wait that long for company after its first
    request, a wait a lone request pays in full (hence 0). ``replicas`` is the fixed count, or the minimum
    when ``max_replicas`` is larger (Serve's autoscaler then adds replicas while each has more than
    ``target_ongoing_requests`` requests). ``max_in_flight`` bounds the memory that admitted requests may
    take (their bodies weighted by what parsing them costs): past it a request gets 503 and a retry hint
    instead of memory. ``max_response`` bounds an answer."""

    name: str = ""  # the model's name in the protocol; default: the file's stem
    max_batch_size: int = 8
    batch_wait_ms: float = 0.0
    replicas: int = 1
    max_replicas: int | None = None
    cpus_per_replica: float = 1.0
    target_ongoing_requests: float | None = None  # autoscaling target; default max(2, max_batch_size)
    max_body: int = MAX_BODY
    max_pixels: int = MAX_PIXELS
    read_timeout_s: float = READ_TIMEOUT_S
    max_in_flight: int = MAX_IN_FLIGHT
    max_response: int = MAX_RESPONSE
    protocol_only: bool = False  # any one-input model over /v2 only, /v1 off (an unpatched baseline)
    extra: dict[str, Any] = field(default_factory=dict)  # more ``@serve.deployment`` options, as given

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", os.fspath(self.model))
        if not self.name:
            object.__setattr__(self, "name", Path(self.model).stem)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", self.name):
            raise OvxaiError(f"name= '{self.name}' cannot name a model in a URL", "use letters, digits, '_', '-', '.'")
        for what, value, least in (
            ("max_batch_size", self.max_batch_size, 1),
            ("replicas", self.replicas, 1),
            ("max_body", self.max_body, 1),
            ("max_pixels", self.max_pixels, 1),
            ("max_in_flight", self.max_in_flight, 1),
            ("max_response", self.max_response, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise OvxaiError(f"{what}= {value} is not a whole number of {least} or more", f"use {what}={least}+")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise OvxaiError(
                f"max_replicas= {self.max_replicas} is below replicas= {self.replicas}",
                "give max_replicas= at least replicas= (the minimum when autoscaling)",
            )
        for what, number in (("batch_wait_ms", self.batch_wait_ms), ("read_timeout_s", self.read_timeout_s)):
            if not math.isfinite(number) or number < 0 or (what == "read_timeout_s" and number == 0):
                raise OvxaiError(f"{what}= {number} is not a usable time", f"give {what}= a positive number")
        if not math.isfinite(self.cpus_per_replica) or self.cpus_per_replica <= 0:
            raise OvxaiError(f"cpus_per_replica= {self.cpus_per_replica} is not a CPU count", "e.g. 1 or 0.5")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None and self.max_replicas > self.replicas

    @property
    def wants_ray(self) -> bool:
        """More than one replica, fixed or autoscaled: Ray Serve's job (one replica is served in process)."""
        return self.replicas > 1 or self.max_replicas is not None
