"""Publish/subscribe across processes (ipc), across ZeroMQ contexts and inside one
process (inproc); latching, conflation, queue depth, gaps and max_age."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

import fleetbus
from tests.helpers import barrier, graph_nodes, read_jsonl, run_on, wait_until
from tests.procs import Blob, Stamped, StampHeader, Text


def _publisher(topic, cls, **kw):
    def setup(node):
        node.pub = node.publisher(topic, cls, **kw)

    return setup


def _subscriber(topic, cls, callback=None, **kw):
    def setup(node):
        node.sub = node.subscribe(topic, cls, callback or node.got.append, **kw)

    return setup


def _publish(node, messages):
    """Publish `messages` from the node's own thread, in one go."""
    run_on(node, lambda: [node.pub.publish(m) for m in messages])


class Gate:
    """A callback that blocks on its first message until `open()`: a subscriber that is
    busy while the publisher keeps sending."""

    def __init__(self, sink: list) -> None:
        self.sink = sink
        self.entered = threading.Event()
        self.inside = False
        self._open = threading.Event()

    def __call__(self, msg) -> None:
        self.sink.append(msg.n)
        self.inside = True
        self.entered.set()
        self._open.wait(20)
        self.inside = False

    def open(self) -> None:
        self._open.set()


def test_ipc_talker_process_to_listener_node(bus):
    listener = bus.node("listener", _subscriber("/chatter", Text))
    bus.spawn("talker", "--topic", "/chatter", "--count", "50", "--rate", "200",
              "--wait-subscribers", "1")
    wait_until(lambda: len(listener.got) >= 50, what="50 messages from the talker process")
    barrier(listener)
    assert [m.n for m in listener.got] == list(range(50))
    assert [m.data for m in listener.got[:2]] == ["msg 0", "msg 1"]
    sub = listener.sub
    assert (sub.gaps, sub.rejected, sub.duplicates, sub.stale) == (0, 0, 0, 0)
    assert [url.split(":")[0] for url in sub._connected.values()] == ["ipc"]
    assert sub.last_header is not None and sub.last_header.seq == 50


def test_ipc_talker_node_to_listener_process(bus):
    talker = bus.node("talker", _publisher("/chatter", Text))
    out = bus.out("listener.jsonl")
    bus.spawn("listener", "--topic", "/chatter", "--out", str(out))
    wait_until(lambda: talker.pub.subscribers >= 1, what="the listener process to subscribe")
    _publish(talker, [Text(data=f"m{i}", n=i) for i in range(100)])
    rows = wait_until(lambda: len(r := read_jsonl(out)) >= 100 and r, what="100 rows")
    assert [r["n"] for r in rows] == list(range(100))
    assert [r["seq"] for r in rows] == list(range(1, 101))
    assert rows[-1]["gaps"] == 0
    assert rows[-1]["urls"][0].startswith("ipc://")


def test_inproc_between_two_nodes_in_one_process(bus):
    talker = bus.node("talker", _publisher("/chatter", Text))
    listener = bus.node("listener", _subscriber("/chatter", Text))
    wait_until(lambda: talker.pub.subscribers >= 1, what="the listener to subscribe")
    _publish(talker, [Text(n=i) for i in range(200)])
    wait_until(lambda: len(listener.got) >= 200, what="200 messages")
    barrier(listener)
    assert [m.n for m in listener.got] == list(range(200))
    assert listener.sub.gaps == 0
    assert [url.split(":")[0] for url in listener.sub._connected.values()] == ["inproc"]


def test_array_messages_between_contexts_use_ipc(bus):
    """Two nodes with separate ZeroMQ contexts cannot use inproc: they link over ipc, and
    numpy arrays travel as separate frames."""
    ctx = zmq.Context()
    bus.closers.append(ctx.term)  # after the nodes closed their sockets
    talker = bus.node("talker", _publisher("/blobs", Blob))
    listener = bus.node("listener", _subscriber("/blobs", Blob), context=ctx)
    wait_until(lambda: talker.pub.subscribers >= 1, what="the listener to subscribe")
    arrays = [np.arange(i, i + 1000, dtype=np.float32).reshape(10, 100) for i in range(5)]
    _publish(talker, [Blob(name=f"b{i}", values=[i], array=a) for i, a in enumerate(arrays)])
    wait_until(lambda: len(listener.got) >= 5, what="5 blobs")
    for i, (msg, sent) in enumerate(zip(listener.got, arrays, strict=True)):
        assert msg.name == f"b{i}" and msg.values == [i]
        assert msg.array.dtype == np.float32 and msg.array.shape == (10, 100)
        np.testing.assert_array_equal(msg.array, sent)
    assert [url.split(":")[0] for url in listener.sub._connected.values()] == ["ipc"]


def test_latched_value_reaches_late_joiner_once(bus):
    # The talker publishes its latched value in setup(), before anyone subscribes.
    bus.spawn("talker", "--topic", "/latched", "--latched", "--count", "1", "--prefix", "L")
    wait_until(
        lambda: graph_nodes(bus.config)["/talker"].publishers[0].messages == 1,
        what="the talker to have published its latched value",
    )
    early = bus.node("early", _subscriber("/latched", Text))
    wait_until(lambda: early.got, what="the latched value for the first subscriber")
    out = bus.out("late.jsonl")
    bus.spawn("listener", "--name", "late", "--topic", "/latched", "--out", str(out))
    rows = wait_until(lambda: read_jsonl(out), what="the latched value for the late joiner")
    assert rows[0]["data"] == "L0"
    # The value is re-sent to every subscriber when the late one joins (PUB has no
    # unicast); the early subscriber must drop it as a duplicate, not deliver it twice.
    wait_until(lambda: early.sub.duplicates >= 1, what="the re-sent value to reach /early")
    barrier(early)
    assert [m.data for m in early.got] == ["L0"]
    assert len(read_jsonl(out)) == 1


def test_conflate_delivers_only_the_newest(bus):
    gate = Gate(sink=[])
    talker = bus.node("talker", _publisher("/fast", Text))
    listener = bus.node("listener", _subscriber("/fast", Text, gate, conflate=True))
    wait_until(lambda: talker.pub.subscribers >= 1, what="the listener to subscribe")
    _publish(talker, [Text(n=0)])
    assert gate.entered.wait(10), "the first message never reached the callback"
    # While the callback is busy, 199 more arrive (inproc: they are queued on return).
    _publish(talker, [Text(n=i) for i in range(1, 200)])
    gate.open()
    wait_until(lambda: gate.sink[-1] == 199, what="the last message to be delivered")
    barrier(listener)
    sub = listener.sub
    assert sub.conflated > 0
    assert gate.sink == sorted(set(gate.sink))  # in order, nothing twice
    assert len(gate.sink) + sub.conflated == 200  # each message delivered or counted
    assert sub.gaps == 0


def test_depth_bounds_the_queue_and_loss_is_counted(bus):
    """Publisher depth 10: a busy subscriber with depth 5 keeps only a handful of messages
    and counts the rest as gaps, while one with a deep queue gets every message."""
    shallow, deep = Gate(sink=[]), Gate(sink=[])
    talker = bus.node("talker", _publisher("/q", Text, depth=10))
    a = bus.node("shallow", _subscriber("/q", Text, shallow, depth=5))
    b = bus.node("deep", _subscriber("/q", Text, deep, depth=1000))
    wait_until(lambda: talker.pub.subscribers >= 2, what="both subscribers")
    _publish(talker, [Text(n=0)])
    assert shallow.entered.wait(10) and deep.entered.wait(10)
    _publish(talker, [Text(n=i) for i in range(1, 500)])
    shallow.open()
    deep.open()
    wait_until(lambda: deep.sink[-1:] == [499], what="the deep subscriber to get everything")
    # What the shallow queue held is delivered now; then send markers until one arrives.
    marker = iter(range(500, 100_000))
    wait_until(
        lambda: _publish(talker, [Text(n=next(marker))]) or shallow.sink[-1] >= 500,
        what="a marker to reach the shallow subscriber",
    )
    barrier(a)
    barrier(b)
    before = [n for n in shallow.sink if n < 500]
    assert 1 < len(before) <= 1 + 2 * (5 + 10), before  # the busy one + what the queues hold
    assert before == sorted(before)
    last_seq = a.sub.last_header.seq
    assert a.sub.gaps == last_seq - len(shallow.sink) > 0  # every lost message counted
    assert deep.sink[:500] == list(range(500))
    assert b.sub.gaps == 0


def test_gaps_counted_and_publisher_never_blocks(bus):
    gate = Gate(sink=[])
    talker = bus.node("talker", _publisher("/firehose", Text))
    listener = bus.node("listener", _subscriber("/firehose", Text, gate, depth=1))
    wait_until(lambda: talker.pub.subscribers >= 1, what="the listener to subscribe")
    _publish(talker, [Text(n=0)])
    assert gate.entered.wait(10)
    # 5000 messages into a full queue: publish() returns although nobody reads.
    _publish(talker, [Text(n=i) for i in range(1, 5000)])
    assert gate.inside, "the subscriber's callback should still be blocked"
    assert talker.pub.stats.messages == 5000
    gate.open()
    marker = iter(range(5000, 100_000))
    wait_until(
        lambda: _publish(talker, [Text(n=next(marker))]) or gate.sink[-1] >= 5000,
        what="a marker after the burst",
    )
    barrier(listener)
    sub = listener.sub
    assert sub.gaps > 0
    assert sub.gaps == sub.last_header.seq - len(gate.sink)
    assert gate.sink == sorted(gate.sink)
    assert listener.info().subscriptions[0].gaps == sub.gaps  # reported to the registry


def test_max_age_drops_stale_messages(bus):
    talker = bus.node("talker", _publisher("/stamped", Stamped))
    strict = bus.node("strict", _subscriber("/stamped", Stamped, max_age=1.0))
    lenient = bus.node("lenient", _subscriber("/stamped", Stamped))
    wait_until(lambda: talker.pub.subscribers >= 2, what="both subscribers")
    old = time.time_ns() - 60 * 10**9  # a minute ago
    msgs = []
    for i in range(10):
        stamp = old if i % 2 else 0  # 0: stamped with the publish time
        msgs.append(Stamped(header=StampHeader(stamp_ns=stamp), n=i))
    _publish(talker, msgs)
    wait_until(lambda: len(lenient.got) >= 10, what="all messages at the lenient subscriber")
    wait_until(lambda: len(strict.got) + strict.sub.stale >= 10, what="the strict subscriber")
    barrier(strict)
    assert [m.n for m in strict.got] == [0, 2, 4, 6, 8]
    assert strict.sub.stale == 5
    assert lenient.sub.stale == 0
    assert strict.info().subscriptions[0].stale == 5  # reported to the registry too


def test_a_node_subclass_may_not_replace_the_bus_machinery():
    with pytest.raises(TypeError, match=r"Clashing redefines Node's private \['_clock_mark'\]"):
        class Clashing(fleetbus.Node):
            def _clock_mark(self) -> None:  # named like the sim clock's machinery
                pass
