"""Hostile or broken input: raw frames that no fleetbus publisher would send, garbage to
the registry and to a node's service socket, callbacks that raise, and random frames
(hypothesis). Everything bad is counted and logged; nothing stops a node or the registry."""

from __future__ import annotations

import logging
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetbus.bus import protocol as p
from fleetbus.bus.config import remove_ipc_files
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.services import hash_bytes
from fleetbus.bus.wire import HEADER_ENCODER, FrameHeader, topic_frame
from fleetbus.messages.codec import ARRAY_EXT, Codec
from tests.helpers import FnNode, barrier, graph_nodes, run_on, wait_until
from tests.procs import AddRequest, Blob, Number, Text

TOPIC = "/raw"


class RawPub:
    """A plain pyzmq PUB socket bound on an ipc path: it sends whatever frames we like."""

    def __init__(self, bus, publisher: str = "raw") -> None:
        self.publisher = publisher
        self.url = f"ipc://{bus.run_dir}/raw.pub"
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.url)
        self.seq = 0
        bus.closers.append(self.close)

    def header(self, cls=Text, **overrides) -> bytes:
        codec = Codec(cls)
        self.seq += 1
        fields = dict(
            type_name=codec.type_name,
            schema_hash=codec.schema_hash,
            publisher=self.publisher,
            seq=self.seq,
            source_stamp_ns=time.time_ns(),
            publish_wall_ns=time.time_ns(),
        )
        fields.update(overrides)
        return HEADER_ENCODER.encode(FrameHeader(**fields))

    def message(self, msg) -> list[bytes]:
        payload, buffers = Codec(type(msg)).encode(msg)
        return [topic_frame(TOPIC), self.header(type(msg)), payload, *buffers]

    def send(self, frames) -> None:
        self.sock.send_multipart(frames)

    def close(self) -> None:
        self.sock.close(linger=0)
        remove_ipc_files([self.url])


def _raw_listener(bus, raw, max_bytes=None):
    """A node subscribed to TOPIC through a static connect to the raw PUB; its callback
    raises on Text(data="raise")."""

    def callback(msg):
        if msg.data == "raise":
            raise RuntimeError("callback refuses this one")
        if msg.data != "sync":  # probes still in flight when the link was found
            node.got.append(msg.data)

    def setup(n):
        n.sub = n.subscribe(TOPIC, Text, callback)
        n.sub.connect(raw.url)

    node = FnNode("listener", setup)
    if max_bytes is not None:
        node.max_message_bytes = max_bytes
    bus.start(node)
    # Nothing tells a raw PUB that a subscriber arrived: probe until one gets through.
    wait_until(lambda: raw.send(raw.message(Text(data="sync"))) or node.sub.stats.messages,
               what="a link")
    return node


def test_bad_frames_are_counted_and_logged_and_good_ones_still_arrive(bus, caplog):
    caplog.set_level(logging.WARNING)
    raw = RawPub(bus)
    node = _raw_listener(bus, raw, max_bytes=4096)
    topic = topic_frame(TOPIC)
    good_payload, _ = Codec(Text).encode(Text(data="fine"))
    number_payload, _ = Codec(Number).encode(Number(v=1.0))
    bad = [  # frames, and how the log line goes on after "<topic>: rejected "
        ([topic + b"garbage"], "truncated frame (1 parts"),
        ([topic, raw.header()], "truncated frame (2 parts"),
        ([topic, b"\x93\x01\x02", good_payload], "bad frame header"),
        ([topic, b"", good_payload], "bad frame header"),
        ([topic, raw.header(), b"\xc1\xc1 not msgpack"], "test/Text: "),
        ([topic, raw.header(), msgpack.packb({"data": 5})], "test/Text: Expected `str`"),
        ([topic, raw.header(Number), number_payload], "frame of type test/Number#"),
        ([topic, raw.header(schema_hash=12345), good_payload], "frame of type test/Text#0000"),
        ([topic, raw.header(), good_payload, b"x" * 3000, b"y" * 3000], "oversized message"),
    ]
    for frames, _ in bad:
        raw.send(frames)
    raw.send(raw.message(Text(data="raise")))
    raw.send(raw.message(Text(data="after")))
    wait_until(lambda: node.got == ["after"], what="the good message after the bad ones")
    barrier(node)
    assert node.sub.rejected == len(bad)
    assert node.counters["rejected_frame"] == len(bad)
    assert node.counters["callback_error"] == 1
    log = "\n".join(r.getMessage() for r in caplog.records)
    for _, words in bad:
        assert f"/listener: {TOPIC}: rejected {words}" in log, words
    assert f"{TOPIC}: RuntimeError: callback refuses this one" in log
    wait_until(
        lambda: graph_nodes(bus.config)["/listener"].subscriptions[0].rejected == len(bad),
        what="the rejected count in the registry's graph",
    )


def test_single_oversized_frame_is_counted_and_link_survives(bus, caplog):
    """One frame bigger than max_message_bytes (a 10 kB string payload, limit 4 kB)."""
    caplog.set_level(logging.WARNING)
    raw = RawPub(bus)
    node = _raw_listener(bus, raw, max_bytes=4096)
    raw.send(raw.message(Text(data="x" * 10_000)))
    raw.send(raw.message(Text(data="after")))
    wait_until(lambda: node.got == ["after"], what="the message after the oversized one")
    assert node.sub.rejected == 1 and node.counters["rejected_frame"] == 1
    assert any("oversized" in r.getMessage() and TOPIC in r.getMessage() for r in caplog.records)


def test_forged_sequence_numbers_do_not_stop_the_node(bus):
    """Huge sequence jumps from several publisher ids: the gap count outgrows what
    MessagePack can carry, and the node must still announce itself (and keep running)."""
    raw = RawPub(bus)
    node = _raw_listener(bus, raw)
    payload, _ = Codec(Text).encode(Text(data="forged"))
    for publisher in ("p1", "p2", "p3"):
        for seq in (1, 2**64 - 1):
            raw.send([topic_frame(TOPIC), raw.header(publisher=publisher, seq=seq), payload])
    wait_until(lambda: node.got.count("forged") == 6, what="the forged frames")
    assert node.sub.gaps == 3 * (2**64 - 3)  # seq 1 → 2**64 - 1, three times
    wait_until(
        lambda: graph_nodes(bus.config)["/listener"].subscriptions[0].gaps > 2**62,
        what="an announce made after the forged frames",
    )
    assert node.thread.is_alive()


def test_garbage_to_the_registry_does_not_stop_it(bus):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    bus.closers.append(sock.close)
    sock.connect(bus.config.registry)
    info = p.NodeInfo(uid="u1", name="/ghost", host="h", pid=1, context="c", started_ns=0)
    garbage = [
        [b""],
        [b"\xff\x00garbage"],
        [b"a", b"b", b"c"],
        [msgpack.packb({"type": "announce"})],
        [msgpack.packb({"type": "announce", "node": {"uid": 5}})],
        [msgpack.packb({"type": "peer_sync", "registry": "x", "nodes": [{"name": 1}]})],
        [msgpack.packb([1, 2, 3])],
        [p.ENCODER.encode(p.Graph(registry="r", started_ns=0, nodes=[info], problems=[]))],
        [p.ENCODER.encode(p.Notice(level="error", text="hi"))],
        [p.ENCODER.encode(p.Bye(uid="nobody"))],
        [bytes(range(256)) * 100],
    ]
    for frames in garbage:
        sock.send_multipart(frames)
    # all but the well-formed Bye; the snapshot below comes on another socket, which the
    # registry may answer before it has read all of this one
    wait_until(lambda: bus.registries[0].rejected == len(garbage) - 1,
               what="the registry to reject the garbage")
    graph = fetch_graph(bus.config, 5.0)
    assert graph is not None and graph.nodes == []
    # A well-formed announce from the same socket is still served.
    sock.send(p.ENCODER.encode(p.Announce(node=info)))
    assert isinstance(p.REPLY_DECODER.decode(sock.recv()), p.AnnounceAck)
    assert "/ghost" in graph_nodes(bus.config)
    node = bus.node("late")
    wait_until(lambda: "/late" in graph_nodes(bus.config), what="a real node to register")
    assert node.counters["registry_error"] == 0


def test_announce_with_malformed_endpoint_does_not_stop_subscribers(bus):
    """Whatever another node announces, a subscriber must survive connecting to it."""
    listener = bus.node("listener", lambda n: setattr(
        n, "sub", n.subscribe("/victim", Text, n.got.append)))
    talker = bus.node("talker", lambda n: setattr(n, "pub", n.publisher("/victim", Text)))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    bus.closers.append(sock.close)
    sock.connect(bus.config.registry)
    codec = Codec(Text)
    bogus = p.NodeInfo(
        uid="bogus", name="/bogus", host="elsewhere", pid=1, context="c", started_ns=0,
        data_urls=["tcp://no-port"],
        publishers=[p.PublisherInfo(topic="/victim", type_name=codec.type_name,
                                    schema_hash=codec.schema_hash)],
    )
    sock.send(p.ENCODER.encode(p.Announce(node=bogus)))
    wait_until(lambda: listener.counters["unreachable"] >= 1, what="the bad endpoint counted")
    wait_until(lambda: talker.pub.subscribers >= 1, what="the real publisher's link")
    run_on(talker, lambda: talker.pub.publish(Text(data="still here")))
    wait_until(lambda: listener.got, what="data from the real publisher")
    assert listener.got == [Text(data="still here")]
    assert listener.thread.is_alive()


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_random_frames_to_the_registry(bus, frames):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(bus.config.registry)
        sock.send_multipart(frames)
        assert fetch_graph(bus.config, 5.0) is not None
    finally:
        sock.close()


def test_garbage_to_a_service_socket_is_counted_and_service_still_answers(bus):
    server = bus.node(
        "server", lambda n: n.service("~/add", AddRequest, Number, lambda r: Number(v=r.a + r.b))
    )
    client = bus.node("client")
    url = next(u for u in server._service_urls if u.startswith("ipc://"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    bus.closers.append(sock.close)
    sock.connect(url)
    sock.send(b"garbage")  # one frame: malformed, no answer possible
    sock.send_multipart([b"id1", b"/server/nope", b"\x00" * 8, b""])
    sock.send_multipart([b"id2", b"/server/add", b"bad hash", b"\x80"])
    payload, _ = Codec(AddRequest).encode(AddRequest(a=1, b=2))
    good_hash = hash_bytes(Codec(AddRequest).schema_hash)
    sock.send_multipart([b"id3", b"/server/add", good_hash, b"\xc1 garbage"])
    sock.send_multipart([b"id4", b"/server/add", good_hash, payload])
    replies = [sock.recv_multipart() for _ in range(4)]  # none for the 1-frame message
    assert [r[:2] for r in replies] == [
        [b"id1", b"error"], [b"id2", b"error"], [b"id3", b"error"], [b"id4", b"ok"],
    ]
    assert b"serves no /server/nope" in replies[0][2]
    assert b"takes test/AddRequest" in replies[1][2]
    assert b"undecodable" in replies[2][2]
    assert Codec(Number).decode(replies[3][2]) == Number(v=3.0)
    barrier(server)
    assert server.counters["service_error"] == 4
    bus.wait_for_nodes("/server")
    answer = run_on(client, lambda: client.call("/server/add", AddRequest(a=20, b=22)))
    assert answer == Number(v=42.0)


# -- random frames at a subscription (hypothesis) -----------------------------------------

_HASHES = [Codec(cls).schema_hash for cls in (Text, Blob, Number)] + [0]


def _ints():
    return st.one_of(st.integers(-3, 3), st.integers(-(2**63), 2**64 - 1))


_headers = st.builds(
    lambda *a: HEADER_ENCODER.encode(FrameHeader(*a)),
    st.sampled_from(["test/Text", "test/Blob", "x", ""]),
    st.one_of(st.sampled_from(_HASHES), _ints()),
    st.sampled_from(["raw", "other", ""]),
    _ints(),
    _ints(),
    _ints(),
)
_leaves = st.one_of(
    st.none(), st.booleans(), _ints(), st.floats(), st.text(max_size=20),
    st.binary(max_size=20),
)
_array_refs = st.builds(
    lambda *ref: msgpack.ExtType(ARRAY_EXT, msgpack.packb(list(ref))),
    st.one_of(st.integers(-2, 3), _leaves),
    st.one_of(st.sampled_from(["<f4", "<i8", "|u1", "O", "V3", "<U2", "foo"]), _leaves),
    st.one_of(st.lists(st.integers(-2, 40), max_size=3), _leaves),
)
_values = st.recursive(
    st.one_of(_leaves, _array_refs, st.builds(msgpack.ExtType, st.integers(0, 127),
                                              st.binary(max_size=10))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["data", "n", "name", "values", "array", "v", "x"]),
                        inner, max_size=4),
    ),
    max_leaves=12,
)
_payloads = st.one_of(st.binary(max_size=64), _values.map(msgpack.packb))
_frame_lists = st.one_of(
    st.lists(st.binary(max_size=64), max_size=6),
    st.tuples(
        st.just(topic_frame(TOPIC)), _headers, _payloads,
        st.lists(st.binary(max_size=64), max_size=3),
    ).map(lambda t: [t[0], t[1], t[2], *t[3]]),
)


def _plain(msg):
    """An untyped subscription hands over frames unchecked: turning garbage into plain
    data fails with ValueError (or TypeError for unhashable map keys), nothing else."""
    try:
        return msg.to_builtins()
    except (ValueError, TypeError) as exc:
        return exc


def test_random_frames_never_escape_a_subscription(bus):
    """Random frame lists straight into `_deliver` of typed, array-typed and untyped
    subscriptions, on the node's own thread: no exception may escape."""
    delivered = []

    def setup(n):
        n.subs = [
            n.subscribe(TOPIC, Text, delivered.append),
            n.subscribe(TOPIC, Blob, delivered.append),
            n.subscribe(TOPIC, None, lambda m: delivered.append(_plain(m))),
        ]

    node = bus.node("fuzz", setup)

    def deliver(frames):
        for sub in node.subs:
            sub._last_seq.clear()  # each example from a clean state: reproducible failures
            sub._deliver(frames)

    @settings(max_examples=200, deadline=None, database=None)
    @given(frames=_frame_lists)
    def check(frames):
        run_on(node, lambda: deliver(frames))

    check()
    assert not node.stopped.is_set()
    assert node.counters["callback_error"] == 0  # only frames that decoded were delivered
    # The node still works end to end afterwards. (A publisher id the fuzzing never used:
    # a forged huge sequence number for an id makes its later frames look like repeats.)
    raw = RawPub(bus, publisher="after-fuzz")
    node_subs = node.subs
    run_on(node, lambda: node_subs[0].connect(raw.url))
    before = len(delivered)
    wait_until(lambda: raw.send(raw.message(Text(data="alive"))) or len(delivered) > before,
               what="a real message after the fuzzing")
    assert any(isinstance(m, Text) and m.data == "alive" for m in delivered[before:])


def test_callback_error_does_not_stop_delivery(bus):
    """A subscriber whose callback raises for every other message (normal publisher)."""

    def callback(msg):
        if msg.n % 2:
            raise ValueError(f"odd {msg.n}")
        node.got.append(msg.n)

    talker = bus.node("talker", lambda n: setattr(n, "pub", n.publisher("/c", Text)))
    node = bus.node("listener", lambda n: n.subscribe("/c", Text, callback))
    wait_until(lambda: talker.pub.subscribers >= 1, what="the subscriber")
    run_on(talker, lambda: [talker.pub.publish(Text(n=i)) for i in range(10)])
    wait_until(lambda: node.got[-1:] == [8], what="the last even message")
    barrier(node)
    assert node.got == [0, 2, 4, 6, 8]
    assert node.counters["callback_error"] == 5


@pytest.mark.parametrize("dtype", ["<f8", "|u1"])
def test_array_frames_with_wrong_sizes_are_rejected(bus, dtype):
    raw = RawPub(bus)
    got = []

    def setup(n):
        n.sub = n.subscribe(TOPIC, Blob, lambda m: m.name != "sync" and got.append(m))
        n.sub.connect(raw.url)

    node = bus.node("arrays", setup)
    array = np.arange(12, dtype=dtype).reshape(3, 4)
    wait_until(lambda: raw.send(raw.message(Blob(name="sync", array=array)))
               or node.sub.stats.messages, what="a link")
    frames = raw.message(Blob(name="short", array=array))
    frames[3] = frames[3][:-1] if isinstance(frames[3], bytes) else bytes(frames[3])[:-1]
    raw.send(frames)
    frames = raw.message(Blob(name="missing", array=array))
    raw.send(frames[:3])
    for not_an_array in ([1, 2], "x", None):  # the decoder's array hook sees these
        raw.send([frames[0], raw.header(Blob), msgpack.packb({"array": not_an_array})])
    raw.send(raw.message(Blob(name="good", array=array)))
    wait_until(lambda: [m.name for m in got] == ["good"], what="the good array message")
    np.testing.assert_array_equal(got[0].array, array)
    assert node.sub.rejected == 5
    assert node.thread.is_alive()


def test_garbage_array_request_to_a_service(bus):
    """A request whose array field is not an array: an error answer, the server lives."""
    server = bus.node("server", lambda n: n.service(
        "~/size", Blob, Number, lambda r: Number(v=float(r.array.size))))
    url = next(u for u in server._service_urls if u.startswith("ipc://"))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    bus.closers.append(sock.close)
    sock.connect(url)
    blob_hash = hash_bytes(Codec(Blob).schema_hash)
    sock.send_multipart([b"id1", b"/server/size", blob_hash, msgpack.packb({"array": [1]})])
    reply = sock.recv_multipart()
    assert reply[:2] == [b"id1", b"error"] and b"undecodable" in reply[2]
    assert run_on(server, lambda: server.counters["service_error"]) == 1  # still running
