"""
Running blocking work (database calls, file I/O, hashing) away from the reactor thread.

A ``Runner`` turns ``fn(*args)`` into a ``Deferred``.  ``ThreadRunner`` owns a private thread
pool so that one slow kind of work (say, fsyncs) cannot starve another (say, metadata reads)
in the reactor's shared pool.  ``InlineRunner`` runs the call at once in the caller's thread:
for in-memory stores and deterministic tests, never for real I/O.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class ThreadRunner:
    """Runs calls in its own pool of ``size`` threads; ``stop`` joins them."""

    def __init__(self, reactor: IReactorThreads, size: int, name: str) -> None:
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=size, maxthreads=size, name=name)
        # Daemon threads: an owner that forgets stop() must not keep the process alive.  Work
        # cut short at exit is safe (SQLite transactions are atomic; partial blobs are removed
        # at the next start).
        self._pool.threadFactory = functools.partial(threading.Thread, daemon=True)
        self._pool.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)  # type: ignore[arg-type]

    def stop(self) -> None:
        self._pool.stop()


class InlineRunner:
    """Runs calls immediately in the calling thread (already-fired ``Deferred``s)."""

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args))
        except BaseException:
            return fail(Failure())

    def stop(self) -> None:
        pass
