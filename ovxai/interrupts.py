"""Ctrl-C and SIGTERM as exceptions in the main thread, so that one clean-up path serves both; blocks of work
that they wait for (a result line and its files are written whole); and a SIGTERM handler kept through
libraries that replace it (``ray.init``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: every ``finally`` and ``with`` on the way out
    runs (requests in flight are waited for, files are closed, a Ray instance is shut down) — where the
    default action would end the process at once, and Ray's own handler kills its processes under the
    running driver (which then dies with a C++ stack dump, its buffered output lost)."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated` in the main thread; the handler before it is put
    back after (off the main thread, where no handler can be set: the block as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


@contextmanager
def deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM that arrive inside the block take effect when it ends: a block that writes one
    result (its files, then its line) is never cut in two. Off the main thread: the block as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        arrived.append(signum)

    saved: dict[int, Any] = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])  # now delivered to the handler put back


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """The SIGTERM handler in place before the block is put back after it (``ray.init`` installs one that
    kills the local Ray instance under the running driver)."""
    on_main = threading.current_thread() is threading.main_thread()
    saved = signal.getsignal(signal.SIGTERM) if on_main else None
    try:
        yield
    finally:
        if on_main and saved is not None:
            signal.signal(signal.SIGTERM, saved)
