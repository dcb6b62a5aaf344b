"""
Moving image bytes between Twisted producers and blob stores, with back-pressure both ways.

``consume`` drives an ``IBodyProducer`` into an asynchronous sink (a blob store's
``write_chunk``), coalescing small writes into large chunks, pausing the producer while more
than ``high_water`` bytes wait for the sink, and enforcing a size cap as bytes arrive.

``ChunkProducer`` is the reverse: an ``IBodyProducer``/``IPushProducer`` that pulls chunks from
an asynchronous source (a blob store's ``read_chunk``) and writes them to a consumer, stopping
while the consumer has it paused.  Neither ever holds more than a few chunks in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .errors import TooLarge

CHUNK = 1024 * 1024
HIGH_WATER = 8 * CHUNK


@implementer(IConsumer)
class _SinkConsumer:
    """The consumer ``consume`` hands to the producer."""

    def __init__(
        self,
        producer: IBodyProducer,
        write_chunk: Callable[[bytes], Deferred[None]],
        size_cap: int | None,
        chunk: int,
        high_water: int,
    ) -> None:
        self._producer = producer
        self._write_chunk = write_chunk
        self._cap = size_cap
        self._chunk = chunk
        self._high_water = high_water
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._in_flight = 0
        self._outstanding = 0
        self._drain_waiters: list[Deferred[None]] = []
        self._paused = False
        self.failure: Failure | None = None
        self.received = 0
        #: Fires with the byte count once everything is in the sink, or fails; see consume().
        self.result: Deferred[int] = Deferred(lambda _: self.fail(Failure(CancelledError())))

    # IConsumer: the producer given to startProducing is the one we steer; these are unused.
    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if self.failure is not None or not data:
            return
        self.received += len(data)
        if self._cap is not None and self.received > self._cap:
            self.fail(Failure(TooLarge(f"Image exceeds the size cap of {self._cap} bytes.")))
            return
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= self._chunk:
            self._dispatch()

    def fail(self, failure: Failure) -> None:
        """
        Give up: stop the producer (whose own Deferred then never fires, as IBodyProducer
        says) and report the failure once the chunks already in the sink have finished.
        """
        if self.failure is None:
            self.failure = failure
            self._buffer, self._buffered = [], 0
            try:
                self._producer.stopProducing()
            except Exception:
                pass
            self.drain().addCallback(lambda _: self._report_failure())

    def _report_failure(self) -> None:
        if not self.result.called:
            self.result.errback(self.failure)

    def producer_finished(self, _: object) -> None:
        if self.failure is not None:
            return
        self.drain().addCallback(lambda _: self._report_success())

    def _report_success(self) -> None:
        if self.failure is not None:
            self._report_failure()
        elif not self.result.called:
            self.result.callback(self.received)

    def _dispatch(self) -> None:
        if not self._buffered or self.failure is not None:
            return
        data = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._in_flight += len(data)
        self._outstanding += 1
        # Chunks go to the sink as soon as they are complete, several at once; the sink
        # applies them in call order (so a store can hash and write in parallel lanes).
        written = maybeDeferred(self._write_chunk, data)
        written.addCallbacks(
            self._written, self._write_failed, callbackArgs=(len(data),), errbackArgs=(len(data),)
        )
        if self._in_flight >= self._high_water and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def _written(self, _: object, size: int) -> None:
        self._in_flight -= size
        self._outstanding -= 1
        if self._paused and self._in_flight < self._high_water // 2 and self.failure is None:
            self._paused = False
            self._producer.resumeProducing()
        self._check_drained()

    def _write_failed(self, failure: Failure, size: int) -> None:
        self._in_flight -= size
        self._outstanding -= 1
        self.fail(failure)
        self._check_drained()

    def _check_drained(self) -> None:
        if self._outstanding == 0 and not self._buffered:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> Deferred[None]:
        """Flush what is buffered; fire when the sink has finished every chunk."""
        self._dispatch()
        drained: Deferred[None] = Deferred()
        self._drain_waiters.append(drained)
        self._check_drained()
        return drained


def consume(
    producer: IBodyProducer,
    write_chunk: Callable[[bytes], Deferred[None]],
    size_cap: int | None = None,
    chunk: int = CHUNK,
    high_water: int = HIGH_WATER,
) -> Deferred[int]:
    """
    Feed everything ``producer`` makes to ``write_chunk`` in chunks of about ``chunk`` bytes.

    Several chunks may be in the sink at once (up to ``high_water`` bytes, then the producer
    is paused); the sink must apply them in the order it is called.

    @return: ``Deferred`` firing with the number of bytes written once the sink has finished
        every chunk, or failing with the first error of the producer or the sink
        (``TooLarge`` past ``size_cap``).  When it fails the producer has been stopped, no
        further chunk is started, and every chunk already started has finished.
    """
    if (
        size_cap is not None
        and producer.length is not UNKNOWN_LENGTH
        and producer.length > size_cap
    ):
        return _failed(TooLarge(f"Image exceeds the size cap of {size_cap} bytes."))
    consumer = _SinkConsumer(producer, write_chunk, size_cap, chunk, high_water)
    producer.startProducing(consumer).addCallbacks(consumer.producer_finished, consumer.fail)
    return consumer.result


def _failed(error: Exception) -> Deferred[int]:
    d: Deferred[int] = Deferred()
    d.errback(Failure(error))
    return d


@implementer(IBodyProducer, IPushProducer)
class ChunkProducer:
    """
    Produce ``length`` bytes from ``read_chunk(offset, size) -> Deferred[bytes]``.

    At most one read is outstanding; while paused, no read starts.  ``on_close`` runs exactly
    once, when production ends for any reason (to close a file descriptor, say).
    """

    def __init__(
        self,
        read_chunk: Callable[[int, int], Deferred[bytes]],
        offset: int,
        length: int,
        on_close: Callable[[], None] = lambda: None,
        chunk: int = CHUNK,
    ) -> None:
        self.length = length
        self._read = read_chunk
        self._position = offset
        self._remaining = length
        self._on_close = on_close
        self._chunk = chunk
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._paused = False
        self._reading = False
        self._stopped = False
        self._closed = False
        self._sync = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self._consumer = consumer
        done: Deferred[None] = Deferred()
        self._done = done
        self._next()
        return done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._next()

    def stopProducing(self) -> None:
        """Stop for good; the ``Deferred`` from ``startProducing`` never fires (IBodyProducer)."""
        self._stopped = True
        self._close()

    def _close(self) -> None:
        # Never close under an outstanding read: the source may still be using what we close.
        if not self._closed and not self._reading:
            self._closed = True
            self._on_close()

    def _next(self) -> None:
        # A loop, not recursion: a source whose reads complete synchronously (memory) would
        # otherwise recurse once per chunk.
        while not (self._stopped or self._paused or self._reading or self._done is None):
            if self._remaining == 0:
                self._close()
                done, self._done = self._done, None
                done.callback(None)
                return
            self._reading = True
            self._sync = True
            size = min(self._chunk, self._remaining)
            self._read(self._position, size).addCallbacks(self._got, self._failed)
            if self._reading:  # still waiting: _got will call _next when the read lands
                self._sync = False
                return

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            self._close()
            return
        if len(data) == 0:
            self._failed(Failure(OSError("image data ended before its recorded size")))
            return
        self._position += len(data)
        self._remaining -= len(data)
        assert self._consumer is not None
        self._consumer.write(data)
        if not self._sync:
            self._next()

    def _failed(self, failure: Failure) -> None:
        self._reading = False
        self._close()
        if not self._stopped and self._done is not None:
            done, self._done = self._done, None
            done.errback(failure)


@implementer(IBodyProducer, IPushProducer)
class TeeProducer:
    """An ``IBodyProducer`` that shows every chunk of another to ``observe`` on its way."""

    def __init__(self, producer: IBodyProducer, observe: Callable[[bytes], None]) -> None:
        self._producer = producer
        self._observe = observe
        self.length = producer.length

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        started: Deferred[None] = self._producer.startProducing(
            _TeeConsumer(consumer, self._observe)
        )
        return started

    def pauseProducing(self) -> None:
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


@implementer(IConsumer)
class _TeeConsumer:
    def __init__(self, consumer: IConsumer, observe: Callable[[bytes], None]) -> None:
        self._consumer = consumer
        self._observe = observe

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._consumer.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._consumer.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._observe(data)
        self._consumer.write(data)


@implementer(IConsumer)
class FanOut:
    """
    One producer read once and written to several consumers: ``branches`` are that many
    ``IBodyProducer``\\ s of the same bytes (an import into several stores, a copy to several
    stores).

    The source starts once every branch has started (or been dropped), is paused while any
    branch is paused (the slowest consumer sets the pace) and stopped when every branch is.
    A branch stopped by its consumer is dropped and the others go on; ``abort`` ends them all
    with a failure.  Nothing is buffered here: each chunk goes to every consumer as it comes.
    """

    def __init__(self, source: IBodyProducer, count: int) -> None:
        self._source = source
        self.branches = [_Branch(self, source.length) for _ in range(count)]
        self._paused: set[_Branch] = set()
        self._started = False
        self._ended = False
        #: Why it ended, if it failed (a branch starting late fails with it at once).
        self.failure: Failure | None = None

    # -- what branches tell it ----------------------------------------------------------------

    def _live(self) -> list[_Branch]:
        return [branch for branch in self.branches if not branch.dropped]

    def _branch_started(self) -> None:
        live = self._live()
        if self._started or not all(branch.consumer is not None for branch in live):
            return
        if not live:
            return
        self._started = True
        try:
            started = self._source.startProducing(self)
        except Exception:
            self.abort(Failure())
            return
        started.addCallbacks(self._finished, self._failed)
        if self._paused and not self._ended:
            # A consumer paused before there was anything to pause: now there is.
            self._source.pauseProducing()

    def _pause(self, branch: _Branch) -> None:
        first = not self._paused
        self._paused.add(branch)
        if first and self._started and not self._ended:
            self._source.pauseProducing()

    def _resume(self, branch: _Branch) -> None:
        if branch not in self._paused:
            return
        self._paused.discard(branch)
        if not self._paused and self._started and not self._ended:
            self._source.resumeProducing()

    def _drop(self, branch: _Branch) -> None:
        self._resume(branch)
        if not self._live():
            self._end()
            with contextlib.suppress(Exception):
                self._source.stopProducing()
        else:
            self._branch_started()  # the others may have been waiting for this one

    def abort(self, failure: Failure) -> None:
        """End every branch with ``failure`` and stop the source."""
        if self._ended:
            return
        self._end()
        self.failure = failure
        with contextlib.suppress(Exception):
            self._source.stopProducing()
        for branch in self._live():
            branch.end(failure)

    def _end(self) -> None:
        self._ended = True

    # -- IConsumer, for the source -------------------------------------------------------------

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        for branch in self._live():
            assert branch.consumer is not None
            branch.consumer.write(data)

    def _finished(self, _: object) -> None:
        if self._ended:
            return
        self._end()
        for branch in self._live():
            branch.end(None)

    def _failed(self, failure: Failure) -> None:
        if self._ended:
            return
        self._end()
        self.failure = failure
        for branch in self._live():
            branch.end(failure)


@implementer(IBodyProducer, IPushProducer)
class _Branch:
    """One of ``FanOut``'s producers."""

    def __init__(self, fan: FanOut, length: Any) -> None:
        self._fan = fan
        self.length = length
        self.consumer: IConsumer | None = None
        self.dropped = False
        self._done: Deferred[None] | None = None

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        self.consumer = consumer
        if self._fan._ended:  # aborted before this consumer came
            failure = self._fan.failure or Failure(CancelledError())
            late: Deferred[None] = Deferred()
            late.errback(failure)
            return late
        self._done = Deferred()
        done = self._done
        self._fan._branch_started()
        return done

    def pauseProducing(self) -> None:
        if not self.dropped:
            self._fan._pause(self)

    def resumeProducing(self) -> None:
        self._fan._resume(self)

    def stopProducing(self) -> None:
        """Drop this branch; its Deferred never fires (as ``IBodyProducer`` says)."""
        if not self.dropped:
            self.dropped = True
            self._fan._drop(self)

    def end(self, failure: Failure | None) -> None:
        done, self._done = self._done, None
        if done is None or done.called:
            return
        if failure is None:
            done.callback(None)
        else:
            done.errback(failure)
