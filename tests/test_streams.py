"""Back-pressure in both directions of imaged's stream plumbing."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH

from imaged.errors import TooLarge
from imaged.streams import ChunkProducer, FanOut, consume

from .conftest import fired


class Producer:
    """A push producer the test drives by hand, recording what the consumer asked of it."""

    def __init__(self, length: Any = UNKNOWN_LENGTH) -> None:
        self.length = length
        self.calls: list[str] = []
        self.done: Deferred[None] = Deferred()
        self.consumer: Any = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        return self.done

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def test_consume_pauses_above_high_water_and_resumes_when_drained() -> None:
    producer = Producer()
    pending: list[Deferred[None]] = []
    written: list[bytes] = []

    def slow_sink(data: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: written.append(data))
        pending.append(d)
        return d

    result = consume(producer, slow_sink, chunk=10, high_water=40)
    for _ in range(5):
        producer.consumer.write(b"x" * 10)
    assert producer.calls == ["pause"]  # 40 bytes in flight: stop reading
    while pending:
        pending.pop(0).callback(None)
    assert producer.calls == ["pause", "resume"]
    producer.done.callback(None)
    while pending:
        pending.pop(0).callback(None)
    assert fired(result) == 50 and b"".join(written) == b"x" * 50


def test_consume_coalesces_small_writes() -> None:
    producer = Producer()
    sizes: list[int] = []
    result = consume(producer, lambda d: succeed(sizes.append(len(d))), chunk=100)
    for _ in range(25):
        producer.consumer.write(b"abcdefghij")
    producer.done.callback(None)
    assert fired(result) == 250 and sizes == [100, 100, 50]


def test_consume_cap_stops_producer_and_fails() -> None:
    producer = Producer()
    result = consume(producer, lambda d: succeed(None), size_cap=15, chunk=4)
    producer.consumer.write(b"x" * 10)
    producer.consumer.write(b"x" * 10)
    assert "stop" in producer.calls
    failures: list[Failure] = []
    result.addErrback(failures.append)
    # A stopped IBodyProducer never fires its Deferred: the failure must not wait for it.
    assert failures and failures[0].check(TooLarge)


def test_consume_refuses_declared_length_over_cap() -> None:
    producer = Producer(length=6)
    failures: list[Failure] = []
    consume(producer, lambda d: succeed(None), size_cap=5).addErrback(failures.append)
    assert failures[0].check(TooLarge) and producer.consumer is None


def test_sink_failure_stops_producer() -> None:
    producer = Producer()
    result = consume(producer, lambda d: Deferred.fromCoroutine(_raise()), chunk=1)
    producer.consumer.write(b"x")
    assert "stop" in producer.calls
    failures: list[Failure] = []
    result.addErrback(failures.append)
    producer.done.callback(None)
    assert failures[0].check(OSError)


async def _raise() -> None:
    raise OSError("disk on fire")


def test_chunk_producer_honours_transport_backpressure() -> None:
    data = bytes(range(256)) * 100
    closed: list[bool] = []
    producer = ChunkProducer(lambda pos, n: succeed(data[pos:pos + n]), 0, len(data),
                             on_close=lambda: closed.append(True), chunk=1000)
    transport = StringTransport()

    class PausingConsumer:
        def __init__(self) -> None:
            self.received = b""

        def write(self, chunk: bytes) -> None:
            self.received += chunk
            transport.write(chunk)
            if len(self.received) % 5000 == 0:
                producer.pauseProducing()

    consumer = PausingConsumer()
    done = producer.startProducing(consumer)
    assert len(consumer.received) == 5000 and not done.called
    producer.resumeProducing()
    assert len(consumer.received) == 10000
    while not done.called:
        producer.resumeProducing()
    assert consumer.received == data and transport.value() == data and closed == [True]


def test_chunk_producer_large_synchronous_source_does_not_recurse() -> None:
    size = 50_000
    producer = ChunkProducer(lambda pos, n: succeed(b"a" * n), 0, size, chunk=1)
    count = [0]

    class Counter:
        def write(self, chunk: bytes) -> None:
            count[0] += len(chunk)

    fired(producer.startProducing(Counter()))
    assert count[0] == size


def test_chunk_producer_stop_closes_after_outstanding_read() -> None:
    reads: list[Deferred[bytes]] = []
    closed: list[bool] = []

    def read(pos: int, n: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        reads.append(d)
        return d

    producer = ChunkProducer(read, 0, 100, on_close=lambda: closed.append(True), chunk=10)
    done = producer.startProducing(type("C", (), {"write": lambda self, d: None})())
    producer.stopProducing()
    assert closed == []  # a read is still using the source
    reads[0].callback(b"x" * 10)
    assert closed == [True] and not done.called and len(reads) == 1


def test_everything_lands_when_a_resume_finishes_the_producer() -> None:
    """
    Regression: a resume that lets a synchronous producer finish runs inside the sink's own
    callback chain; ``consume`` must still wait for every chunk before it reports success.
    """
    data = bytes(range(256)) * 4096  # 1 MiB
    pending: list[Deferred[None]] = []
    written: list[bytes] = []

    def slow_sink(chunk: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: written.append(chunk))
        pending.append(d)
        return d

    producer = ChunkProducer(lambda pos, n: succeed(data[pos:pos + n]), 0, len(data),
                             chunk=4096)
    result = consume(producer, slow_sink, chunk=4096, high_water=16384)
    while pending:
        pending.pop(0).callback(None)
        if result.called:
            break
    assert b"".join(written) == data
    assert fired(result) == len(data)


class Sink:
    """A consumer of one ``FanOut`` branch that keeps what it got."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.got.append(data)


def test_fan_out_reads_once_writes_all_and_the_slowest_sets_the_pace() -> None:
    source = Producer(length=6)
    fan = FanOut(source, 3)
    sinks = [Sink() for _ in fan.branches]
    done = [fan.branches[0].startProducing(sinks[0]), fan.branches[1].startProducing(sinks[1])]
    assert source.consumer is None  # not before every branch has a consumer
    done.append(fan.branches[2].startProducing(sinks[2]))
    assert source.consumer is fan and all(b.length == 6 for b in fan.branches)
    source.consumer.write(b"abc")
    fan.branches[0].pauseProducing()
    fan.branches[1].pauseProducing()
    assert source.calls == ["pause"]  # once, however many are behind
    fan.branches[0].resumeProducing()
    assert source.calls == ["pause"]  # still one behind
    fan.branches[1].resumeProducing()
    assert source.calls == ["pause", "resume"]
    fan.branches[2].stopProducing()  # that store failed: the others go on without it
    source.consumer.write(b"def")
    source.done.callback(None)
    assert [b"".join(s.got) for s in sinks] == [b"abcdef", b"abcdef", b"abc"]
    assert fired(done[0]) is None and fired(done[1]) is None and not done[2].called


def test_fan_out_abort_fails_every_branch_and_stops_the_source() -> None:
    source = Producer()
    fan = FanOut(source, 2)
    first = fan.branches[0].startProducing(Sink())
    fan.abort(Failure(TooLarge("too much")))
    assert source.calls == ["stop"]
    errors: list[Failure] = []
    first.addErrback(errors.append)
    late = fan.branches[1].startProducing(Sink())  # a store that started after the abort
    late.addErrback(errors.append)
    assert [e.check(TooLarge) for e in errors] == [TooLarge, TooLarge]


def test_fan_out_stops_the_source_when_every_branch_stopped() -> None:
    source = Producer()
    fan = FanOut(source, 2)
    for branch in fan.branches:
        branch.startProducing(Sink())
    for branch in fan.branches:
        branch.stopProducing()
    assert source.calls[-1] == "stop"


def test_fan_out_applies_a_pause_made_before_the_source_started() -> None:
    source = Producer()
    fan = FanOut(source, 2)
    fan.branches[0].startProducing(Sink())
    fan.branches[0].pauseProducing()  # this store is behind before anything flowed
    fan.branches[1].startProducing(Sink())
    assert source.calls == ["pause"]
    fan.branches[0].resumeProducing()
    assert source.calls == ["pause", "resume"]
