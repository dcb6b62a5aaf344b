"""
The request id in every log event: a context variable the web layer sets, read by imaged's logger.

The web layer binds a request's id (``x-openstack-request-id``) while it handles the request;
coroutines and Deferred callbacks started there keep that context (Twisted runs a coroutine in
the context it was created in), and ``imaged.threads`` carries it into worker threads.  So a
service or store event logged on behalf of a request carries ``request_id`` without anyone
passing it along.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TypeVar

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel

T = TypeVar("T")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "imaged_request_id", default=None
)


def run_for_request(request_id: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` in a fresh context bound to ``request_id`` (and what it starts, too)."""

    def bound() -> T:
        REQUEST_ID.set(request_id)
        return fn()

    return contextvars.copy_context().run(bound)


class Logger(_TwistedLogger):
    """``twisted.logger.Logger`` whose events carry the current request's ``request_id``."""

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: object) -> None:
        if "request_id" not in kwargs:
            request_id = REQUEST_ID.get()
            if request_id is not None:
                kwargs["request_id"] = request_id
        super().emit(level, format, **kwargs)


__all__ = ["REQUEST_ID", "Logger", "run_for_request"]
