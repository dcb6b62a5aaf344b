"""
Running blocking work (database calls, file I/O, hashing) away from the reactor thread.

A ``Runner`` turns ``fn(*args)`` into a ``Deferred``.  ``ThreadRunner`` owns private threads
so that one slow kind of work (say, fsyncs) cannot starve another (say, metadata reads)
in the reactor's shared pool.  ``InlineRunner`` runs the call at once in the caller's thread:
for in-memory stores and deterministic tests, never for real I/O.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, FirstError, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

T = TypeVar("T")


class ThreadRunner:
    """
    Runs calls in ``size`` threads of its own; ``stop`` lets queued calls finish, then joins.

    Deliberately thinner than ``twisted.python.threadpool``: one queue and plain threads.  On a
    request path that hops to the database thread and back, that hop is a large part of the
    cost (about a third less time per hop, measured on loopback).  The caller's context
    variables go along (``contextvars.copy_context`` is a constant-time snapshot), so events a
    thread logs carry the request id (``imaged.logcontext``).
    The threads are daemon threads: an owner that forgets ``stop`` must not keep the process
    alive, and work cut short at exit is safe (SQLite transactions are atomic; partial blobs
    are removed at the next start).
    """

    _STOP = object()

    def __init__(self, reactor: IReactorFromThreads, size: int, name: str) -> None:
        self._call_from_thread = reactor.callFromThread
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        d: Deferred[T] = Deferred()
        self._queue.put((contextvars.copy_context(), fn, args, d))
        return d

    def _work(self) -> None:
        reply = self._call_from_thread
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            context, fn, args, d = item
            try:
                result = context.run(fn, *args)
            except BaseException:
                reply(d.errback, Failure())
            else:
                reply(d.callback, result)

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(self._STOP)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        self._threads = []


class Runner(Protocol):
    """Where blocking calls run: ``ThreadRunner`` for real I/O, ``InlineRunner`` in tests."""

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]: ...

    def stop(self) -> None: ...


class InlineRunner:
    """Runs calls immediately in the calling thread (already-fired ``Deferred``s)."""

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        try:
            return succeed(fn(*args))
        except BaseException:
            return fail(Failure())

    def stop(self) -> None:
        pass


def all_done(work: list[Deferred[Any]]) -> Deferred[None]:
    """
    Fires with ``None`` once every piece of ``work`` (run in parallel, say in several
    threads) has finished, or fails with the first failure itself, not ``gatherResults``'
    wrapper around it.
    """
    gathered: Deferred[Any] = gatherResults(work, consumeErrors=True)

    def unwrap(failure: Failure) -> Failure:
        if failure.check(FirstError):
            sub: Failure = failure.value.subFailure  # type: ignore[union-attr]
            return sub
        return failure

    return gathered.addCallbacks(lambda _: None, unwrap)
