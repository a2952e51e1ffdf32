"""The engine behind an event loop: requests queue while an inference runs and go together as the next batch.

One batch runs at a time. A request that finds the engine idle starts at once, alone (no wait for company
unless ``wait_s`` asks for it); requests that arrive while it runs queue, and when it ends up to
``max_batch_size`` images of one shape go as the next inference. The engine runs off the loop without a thread
per request: OpenVINO through an ``AsyncInferQueue`` whose callback (OpenVINO's thread) hands the outputs to the
loop with ``call_soon_threadsafe``; any other session (ONNX Runtime) on one worker thread. So the loop stays free
to parse and answer other requests while the engine works, and the batch it starts next is as large as the
traffic allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ovxai.errors import OvxaiError, engine_reason
from ovxai.runtime.backends import OpenVinoSession, Outputs, Session, output_name

Finished = Callable[[Outputs | BaseException, float], None]  # (outputs or failure, engine seconds)


class _OpenVinoEngine:
    """One OpenVINO infer request driven asynchronously: its callback runs on OpenVINO's thread."""

    def __init__(self, session: OpenVinoSession) -> None:
        import openvino as ov

        self._queue = ov.AsyncInferQueue(session.compiled, 1)
        self._queue.set_callback(_completed)
        self._names = session.output_names

    def submit(self, batch: np.ndarray, loop: asyncio.AbstractEventLoop, finished: Finished) -> None:
        self._queue.start_async({0: batch}, (loop, finished))

    def close(self) -> None:
        self._queue.wait_all()  # a request still running when its queue goes aborts the process


def _completed(request: Any, userdata: tuple[asyncio.AbstractEventLoop, Finished]) -> None:
    """AsyncInferQueue callback: copy the outputs out (the request is reused) and hand them to the loop."""
    loop, finished = userdata
    result: Outputs | BaseException
    try:  # nothing may escape into OpenVINO's thread
        result = {output_name(o): np.array(request.get_tensor(o).data, copy=True) for o in request.model_outputs}
        seconds = request.latency / 1000
    except BaseException as exc:
        result, seconds = exc, 0.0
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for this batch
        loop.call_soon_threadsafe(finished, result, seconds)


class _ThreadEngine:
    """Any session on one worker thread (ONNX Runtime's ``run`` releases the GIL)."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ovxai-engine")

    def submit(self, batch: np.ndarray, loop: asyncio.AbstractEventLoop, finished: Finished) -> None:
        def run() -> None:
            began = time.perf_counter()
            result: Outputs | BaseException
            try:
                result = self._session.infer(batch)
            except BaseException as exc:
                result = exc
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished, result, time.perf_counter() - began)

        self._pool.submit(run)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class Served:
    """What the engine did so far."""

    requests: int = 0
    images: int = 0
    inferences: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        inferences = max(self.inferences, 1)
        return {
            "requests": self.requests,
            "images": self.images,
            "inferences": self.inferences,
            "requests_per_inference": round(self.requests / inferences, 2),
            "inference_ms_mean": round(self.seconds * 1000 / inferences, 3),
        }


@dataclass
class _Waiting:
    tensor: np.ndarray
    future: asyncio.Future[tuple[Outputs, float]]


class Batcher:
    """Runs requests' tensors on a session from one event loop, batching those that wait (see the module)."""

    def __init__(self, session: Session, max_batch_size: int, wait_s: float = 0.0) -> None:
        self.static_batch = session.input_shape[0]
        self.max_batch_size = 1 if self.static_batch else max_batch_size
        self.wait_s = wait_s
        self.served = Served()
        self._engine = _OpenVinoEngine(session) if isinstance(session, OpenVinoSession) else _ThreadEngine(session)
        self._waiting: deque[_Waiting] = deque()
        self._running = False
        self._timer: asyncio.TimerHandle | None = None
        self._idle: asyncio.Event | None = None

    async def run(self, tensor: np.ndarray) -> tuple[Outputs, float]:
        """The model's outputs for ``tensor`` and the engine seconds of its share of the batches it ran in. A
        request of more than ``max_batch_size`` images runs as several inferences of at most that many, one after
        the other: the engine keeps memory for the largest batch it has run, and this bounds it."""
        size = self.max_batch_size
        if self.static_batch or len(tensor) <= size:
            return await self._run(tensor)
        parts = [await self._run(tensor[start : start + size]) for start in range(0, len(tensor), size)]
        outputs = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
        return outputs, sum(p[1] for p in parts)

    async def _run(self, tensor: np.ndarray) -> tuple[Outputs, float]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(tensor, loop.create_future())
        self._waiting.append(waiting)
        if self._idle is not None:
            self._idle.clear()
        if not self._running:
            if self._timer is not None and len(self._waiting) >= self.max_batch_size:  # full: no more waiting
                self._timer.cancel()
                self._launch()
            elif self._timer is None:
                if self.wait_s > 0 and len(self._waiting) < self.max_batch_size:
                    self._timer = loop.call_later(self.wait_s, self._launch)
                else:
                    self._launch()
        return await waiting.future

    @property
    def busy(self) -> bool:
        return self._running or bool(self._waiting)

    async def idle(self) -> None:
        """Return once nothing runs or waits."""
        while self.busy:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            await self._idle.wait()

    def close(self) -> None:
        self._engine.close()

    def _launch(self) -> None:
        self._timer = None
        while self._waiting and self._waiting[0].future.done():  # its client went away
            self._waiting.popleft()
        if not self._waiting:
            self._set_idle()
            return
        first = self._waiting.popleft()
        taken, rows = [first], len(first.tensor)
        if not self.static_batch:
            shape = first.tensor.shape[1:]
            kept: deque[_Waiting] = deque()
            while self._waiting:
                item = self._waiting.popleft()
                if item.future.done():
                    continue
                if item.tensor.shape[1:] == shape and rows + len(item.tensor) <= self.max_batch_size:
                    taken.append(item)
                    rows += len(item.tensor)
                else:
                    kept.append(item)
            self._waiting = kept
        batch = np.concatenate([w.tensor for w in taken]) if len(taken) > 1 else first.tensor
        self._running = True
        loop = asyncio.get_running_loop()
        try:
            self._engine.submit(batch, loop, lambda result, seconds: self._finished(taken, result, seconds))
        except BaseException as exc:
            self._finished(taken, exc, 0.0)

    def _finished(self, taken: list[_Waiting], result: Outputs | BaseException, seconds: float) -> None:
        self._running = False
        rows = sum(len(w.tensor) for w in taken)
        self.served.inferences += 1
        self.served.requests += len(taken)
        self.served.images += rows
        self.served.seconds += seconds
        start = 0
        for waiting in taken:
            count = len(waiting.tensor)
            if not waiting.future.done():
                if isinstance(result, BaseException):
                    reason = engine_reason(result)
                    waiting.future.set_exception(OvxaiError(f"inference failed: {reason}"))
                else:
                    share = {k: v[start : start + count] for k, v in result.items()} if len(taken) > 1 else result
                    waiting.future.set_result((share, seconds * count / rows))
            start += count
        if self._waiting:
            self._launch()
        else:
            self._set_idle()

    def _set_idle(self) -> None:
        if self._idle is not None and not self.busy:
            self._idle.set()
