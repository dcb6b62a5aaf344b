"""
Time as imaged reads it: an injected ``IReactorTime``, shown as naive UTC ``datetime`` values.

The service, the lifecycle and the Keystone cache never ask the wall clock themselves; they are
handed a clock (the reactor in the daemon, a ``twisted.internet.task.Clock`` in tests), so that
tests move time forward instead of sleeping.
"""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.interfaces import IReactorTime


def utc(clock: IReactorTime) -> datetime:
    """``clock``'s now as a naive UTC datetime: what every store keeps and compares."""
    return datetime.fromtimestamp(clock.seconds(), UTC).replace(tzinfo=None)


def default_clock() -> IReactorTime:
    """The global reactor, for callers that were given no clock."""
    from twisted.internet import reactor

    clock: IReactorTime = reactor
    return clock
