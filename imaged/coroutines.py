"""
Coroutines behind Deferred-returning methods: the one decorator every such method uses.

imaged's interfaces promise ``Deferred``s (what Twisted callers and Klein expect); its code is
written as ``async def``.  ``@deferred`` joins the two, so a method is written once instead of
as a public wrapper plus a private coroutine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred

P = ParamSpec("P")
T = TypeVar("T")


def deferred(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Deferred[T]]:
    """Make ``async def fn`` return a ``Deferred`` (cancelling it cancels the coroutine)."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> Deferred[T]:
        return Deferred.fromCoroutine(fn(*args, **kwargs))

    return run


__all__ = ["deferred"]
