"""Ctrl-C and SIGTERM as exceptions in the main thread, so that one clean-up path serves both; blocks of work
that they wait for (a result line and its files are written whole); a SIGTERM handler kept through
libraries that replace it (``ray.init``); and a signal stack that engines cannot free under the handlers."""

from __future__ import annotations

import ctypes
import signal
import sys
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


class _SignalStack(ctypes.Structure):
    """Linux's ``stack_t``."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_SIGNAL_STACK_BYTES = 1 << 16
_owned = threading.local()  # this thread's stack, never freed while the thread lives


def keep_signal_stack() -> None:
    """Put back the calling thread's own alternate signal stack; call it after an engine compiles a model.

    Why: Python's signal handlers run on the thread's alternate stack (they are installed with SA_ONSTACK).
    OpenVINO's CPU plugin (2026.4) installs a stack of its own at a Core's first compilation and, when that
    Core is released, puts back the stack that was there before it, which another Core's release may
    have freed already: the next Ctrl-C or SIGTERM then lands on freed memory and the process dies with
    SIGSEGV instead of shutting down. A plugin leaves alone a stack that is not its own when released, so
    one this module owns, put back after each compilation, is never freed under a handler."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = getattr(_owned, "buffer", None)
    if buffer is None:
        buffer = _owned.buffer = ctypes.create_string_buffer(_SIGNAL_STACK_BYTES)
    current = _SignalStack()
    if libc.sigaltstack(None, ctypes.byref(current)) != 0 or current.ss_flags & 1:  # SS_ONSTACK: in a handler
        return
    if current.ss_sp != ctypes.addressof(buffer):
        mine = _SignalStack(ctypes.addressof(buffer), 0, _SIGNAL_STACK_BYTES)
        libc.sigaltstack(ctypes.byref(mine), None)
