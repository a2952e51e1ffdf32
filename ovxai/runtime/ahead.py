"""Work started ahead of its consumer on a few threads, handed over in input order."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for work that runs without the GIL (decoding, resizing, encoding): one per core, at most 4 —
    beyond that the engine, which wants the cores too, loses more than the pictures gain."""
    return max(1, min(4, os.cpu_count() or 1))


def map_ahead(
    function: Callable[[T], R], items: Iterable[T], workers: int, ahead: int, name: str = "ovxai"
) -> Generator[tuple[T, Future[R]], None, None]:
    """``function`` applied to ``items`` on ``workers`` threads; (item, its future) in input order, each
    started up to ``ahead`` items before the consumer takes it (``items`` is read no further: memory stays
    bounded whatever its length). Closing the generator (or leaving it by an exception) cancels the calls
    not yet started and waits for the running ones."""
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        for item in items:
            pending.append((item, pool.submit(function, item)))
            if len(pending) > ahead:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
