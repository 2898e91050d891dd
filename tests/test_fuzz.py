"""Every parser of outside input, fuzzed (issue 11): data frames as a subscription receives
them, frame headers, message payloads, registry messages, graph files, GeoJSON geofences,
fault plans, and what the MAVLink ground-station face, the PX4 link and the ArduPilot JSON
backend read from the wire.

The property is the same everywhere: a parser returns a value or raises its documented
error with a message; no other exception escapes (the caller catches only that one, so any
other would stop a node), nothing hangs (hypothesis' deadline), and decoding never
allocates far beyond its input, whatever lengths a MessagePack header declares
(tracemalloc). Inputs are built rather than only random, because random bytes rarely get
past a parser's first check: valid frames, files and packets, then mutated (bit flips,
truncation, huge length prefixes, deep nesting, NaN and infinity, wrong types, huge
integers, YAML aliases).

FLEETBUS_FUZZ_EXAMPLES sets the examples per target (default 300). `python -m
benchmarks.fuzz` runs the same targets at scale (TARGETS, `run`).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import shutil
import tempfile
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import hypothesis
import msgpack
import msgspec
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pymavlink.dialects.v20 import common as mavlink

from fleetbus.bus import protocol as p
from fleetbus.bus.config import BusConfig
from fleetbus.bus.node import Node
from fleetbus.bus.wire import HEADER_DECODER, HEADER_ENCODER, FrameHeader, topic_frame
from fleetbus.estimation import Estimate
from fleetbus.launch.graph import Graph
from fleetbus.launch.loader import GraphError, validate
from fleetbus.messages import (
    ArrayMsg,
    Clock,
    Event,
    GeofenceZone,
    Header,
    Odometry,
    Pose,
    Twist,
    Vector3,
)
from fleetbus.messages import Blob as BytesBlob
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages.codec import ARRAY_EXT, Codec, DecodeError, to_builtins
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.planners import Geofence, GeofenceError, Zone, load_geojson
from fleetbus.sim_bridge.ardupilot import (
    ERRORS,
    ServoPacket,
    encode_servo,
    make_physics,
)
from fleetbus.sim_bridge.faults import SENSORS, FaultInjector, FaultPlanError, load_plan
from fleetbus.sim_bridge.gcs_face import GcsFace
from fleetbus.sim_bridge.hil_body import HilBody
from fleetbus.sim_bridge.px4 import Px4Link
from tests.procs import Blob as ArrayBlob

EXAMPLES = int(os.environ.get("FLEETBUS_FUZZ_EXAMPLES", "300"))
DEADLINE_MS = 2000  # per input: a parser that takes longer hangs on it
YAML_DEADLINE_MS = 6000
"""PyYAML's pure-Python scanner spends up to 1.5 s on a document of a thousand nested
flow brackets (its simple-key bookkeeping is quadratic, until the parser's recursion gives
up), and a graph reads up to three documents: its file, an include and --set values."""
MAX_INPUT = 16 * 1024  # bytes: the largest input the byte mutations build
MEMORY_LIMIT = 4 * 2**20
"""Peak allocation allowed while decoding one input of at most MAX_INPUT bytes: MessagePack
turns a byte into at most one small object (an empty list is 56 bytes), while a decoder
that trusted a declared length of 2**32 - 1 would ask for gigabytes."""

Outcome = Literal["accepted", "rejected"]


# -- targets and how they run -------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing: its inputs, and the check of one input, which returns
    whether the parser accepted it or rejected it with its documented error, and raises
    on anything else."""

    name: str
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], Outcome]
    sample: Any  # a valid input, which must be accepted (and warms the caches up)
    scale: int  # examples per run of `python -m benchmarks.fuzz`
    deadline_ms: int = DEADLINE_MS


TARGETS: dict[str, Target] = {}


def target(name: str, inputs: st.SearchStrategy[Any], sample: Any, scale: int,
           deadline_ms: int = DEADLINE_MS,
           ) -> Callable[[Callable[[Any], Outcome]], Callable[[Any], Outcome]]:
    def register(check: Callable[[Any], Outcome]) -> Callable[[Any], Outcome]:
        TARGETS[name] = Target(name, inputs, check, sample, scale, deadline_ms)
        return check

    return register


def run(target: Target, examples: int = EXAMPLES, seed: int | None = None,
        observe: Callable[[Any, Callable[[], Outcome]], None] | None = None) -> None:
    """Check `examples` inputs of `target`. `observe(value, check)` (the benchmark's) runs
    each check itself, to count the outcomes and go on past a crash; without it the first
    crash fails, shrunk, and so does an input slower than the target's deadline."""
    assert target.check(target.sample) == "accepted", f"{target.name}: sample refused"

    def check(value: Any) -> None:
        if observe is None:
            target.check(value)
        else:
            observe(value, lambda: target.check(value))

    test = settings(
        max_examples=examples, deadline=target.deadline_ms if observe is None else None,
        database=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much, HealthCheck.large_base_example],
    )(given(target.inputs)(check))
    if seed is not None:
        test = hypothesis.seed(seed)(test)
    test()


def rejected(exc: BaseException) -> Outcome:
    """An allowed error, which must say what is wrong."""
    assert str(exc).strip(), f"{type(exc).__name__} without a message"
    return "rejected"


def bounded(decode: Callable[[], Any]) -> Any:
    """decode(), failing if it allocated more than MEMORY_LIMIT at its peak."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    try:
        return decode()
    finally:
        peak = tracemalloc.get_traced_memory()[1] - before
        if started:
            tracemalloc.stop()
        assert peak <= MEMORY_LIMIT, f"decoding allocated {peak} bytes"


@functools.cache
def scratch(name: str) -> Path:
    """A folder of our own for files a parser reads, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"fbfuzz-{name}-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


# -- mutations ------------------------------------------------------------------------------

HUGE_PREFIXES = (
    b"\xdd\xff\xff\xff\xff",  # array 32: 2**32 - 1 items follow
    b"\xdf\xff\xff\xff\xff",  # map 32
    b"\xdb\xff\xff\xff\xff",  # str 32: 4 GiB of text follow
    b"\xc6\xff\xff\xff\xff",  # bin 32
    b"\xc9\xff\xff\xff\xff\x01",  # ext 32 of code 1, an array reference
    b"\xdc\xff\xff",  # array 16
    b"\xde\xff\xff",  # map 16
    b"\xda\xff\xff",  # str 16
    b"\xc5\xff\xff",  # bin 16
    b"\xc8\xff\xff\x01",  # ext 16
)
"""MessagePack headers that declare far more than any input holds."""
ODD_VALUES = (
    b"\xcf" + b"\xff" * 8,  # uint64 max
    b"\xd3\x80" + bytes(7),  # int64 min
    b"\xcb\x7f\xf8" + bytes(6),  # float64 NaN
    b"\xcb\x7f\xf0" + bytes(6),  # float64 infinity
    b"\xca\xff\x80\x00\x00",  # float32 minus infinity
    b"\xc1",  # never used
    b"\xd4\x01\x00",  # fixext 1 of code 1: an array reference of one byte
    b"\xd4\x7f\x00",  # an unknown extension
    b"\xa3\xff\xfe\xfd",  # a string that is not UTF-8
)
DEEP = (b"\x91" * 5000 + b"\xc0", b"\x81\xa1a" * 3000 + b"\xc0", b"\x91" * 200)
"""Nesting deeper than any decoder's recursion limit (and a moderate one)."""
_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0x90, 0x91, 0xC0, 0xC1, 0xC6, 0xC9, 0xD4,
                      0xDB, 0xDD, 0xDF, 0xFD, 0xFE, 0xFF)
_SPLICES = HUGE_PREFIXES + ODD_VALUES + DEEP


def _flip(draw: Any, data: bytearray, at: int) -> None:
    if data:
        data[at] ^= 1 << draw(st.integers(0, 7))


def _set_byte(draw: Any, data: bytearray, at: int) -> None:
    if data:
        data[at] = draw(st.sampled_from(_INTERESTING_BYTES))


def _truncate(draw: Any, data: bytearray, at: int) -> None:
    del data[at:]


def _insert(draw: Any, data: bytearray, at: int) -> None:
    data[at:at] = draw(st.sampled_from(_SPLICES))


def _overwrite(draw: Any, data: bytearray, at: int) -> None:
    splice = draw(st.sampled_from(_SPLICES))
    data[at:at + len(splice)] = splice


def _delete(draw: Any, data: bytearray, at: int) -> None:
    del data[at:at + draw(st.integers(1, 16))]


def _duplicate(draw: Any, data: bytearray, at: int) -> None:
    data[at:at] = data[at:at + draw(st.integers(1, 64))]


def _random(draw: Any, data: bytearray, at: int) -> None:
    data[at:at] = draw(st.binary(min_size=1, max_size=16))


_BYTE_OPS = (_flip, _flip, _set_byte, _truncate, _insert, _overwrite, _delete, _duplicate,
             _random)


def mutate(draw: Any, data: bytes, most: int = 4) -> bytes:
    """`data` changed by up to `most` mutations (none at all, now and then)."""
    changed = bytearray(data)
    for _ in range(draw(st.integers(0, most))):
        at = draw(st.integers(0, max(len(changed) - 1, 0)))
        draw(st.sampled_from(_BYTE_OPS))(draw, changed, at)
    return bytes(changed[:MAX_INPUT])


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[bytes], most: int = 4) -> bytes:
    """`base`'s bytes, mutated."""
    return mutate(draw, draw(base), most)


def nested(depth: int, leaf: Any = 0) -> Any:
    """`leaf` inside `depth` lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def laughs(levels: int, width: int) -> list[Any]:
    """A "billion laughs": `width` references to the level below, `levels` deep, so
    width ** levels leaves share a few objects (YAML writes it with anchors and aliases)."""
    value: list[Any] = ["lol"] * width
    for _ in range(levels - 1):
        value = [value] * width
    return value


def recursive() -> list[Any]:
    """A list that contains itself (YAML: `&a [*a]`)."""
    value: list[Any] = [1]
    value.append(value)
    return value


NAN, INF = math.nan, math.inf
HUGE_INTS = (2**63, -(2**63) - 1, 2**64, 10**400, -(10**400), 10**4000)
f64 = st.floats() | st.sampled_from([NAN, INF, -INF, -0.0, 1e308, -1e308, 5e-324])
i64 = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, -1, 2**63 - 1, -(2**63)])
text = st.text(max_size=12)
json_junk = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(HUGE_INTS), f64, text,
    st.sampled_from(["", "\x00", "Feature", "Polygon", "${x}", "x" * 10_000]),
    st.lists(st.integers(-200, 200), max_size=4),
    st.dictionaries(text, st.integers(), max_size=3),
    st.integers(1, 150).map(nested),
)
"""Values a JSON document can hold, in the wrong place: wrong types, huge and non-finite
numbers, deep nesting."""
yaml_junk = json_junk | st.one_of(
    st.dates(), st.datetimes(), st.binary(max_size=8), st.sets(st.integers(0, 5), max_size=3),
    st.builds(laughs, st.integers(1, 9), st.integers(2, 10)), st.builds(recursive),
)
"""What YAML adds: dates, bytes, sets, aliases (billion laughs, a list holding itself)."""


@st.composite
def replaced(draw: Any, tree: Any, junk: st.SearchStrategy[Any]) -> Any:
    """`tree` (dicts and lists) with one part replaced by junk, or deleted, or an unknown
    key added, along a random path from the root."""
    if isinstance(tree, dict | list) and tree and draw(st.integers(0, 3)):
        if isinstance(tree, dict):
            key = draw(st.sampled_from(sorted(tree, key=repr)))
            action = draw(st.sampled_from(["descend", "descend", "delete", "add"]))
            if action == "delete":
                return {k: v for k, v in tree.items() if k != key}
            if action == "add":
                return {**tree, draw(text | st.integers() | st.none()): draw(junk)}
            return {**tree, key: draw(replaced(tree[key], junk))}
        index = draw(st.integers(0, len(tree) - 1))
        return [*tree[:index], draw(replaced(tree[index], junk)), *tree[index + 1:]]
    return draw(junk)


def broken(trees: st.SearchStrategy[Any], junk: st.SearchStrategy[Any],
           most: int = 3) -> st.SearchStrategy[Any]:
    """`trees` with up to `most` parts replaced."""

    @st.composite
    def build(draw: Any) -> Any:
        tree = draw(trees)
        for _ in range(draw(st.integers(0, most))):
            tree = draw(replaced(tree, junk))
        return tree

    return build()


# -- frames, headers, payloads, registry messages -------------------------------------------

TOPIC = "/fuzz"
DTYPES = ("<f8", "<f4", ">i2", "|u1", "|b1", "<c16", "<U3", "|S2", "<M8[ns]", "<m8[s]")
MESSAGE_TYPES = (Odometry, GeofenceMsg, ArrayMsg, Event, Clock, BytesBlob, ArrayBlob)
codec = functools.cache(Codec)

_vectors = st.builds(Vector3, x=f64, y=f64, z=f64)
_headers = st.builds(Header, stamp_ns=i64, frame_id=text)
_arrays = hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3,
                                                               min_side=0, max_side=4))
messages = st.one_of(
    st.builds(Odometry, header=_headers, child_frame_id=text,
              pose=st.builds(Pose, position=_vectors),
              twist=st.builds(Twist, linear=_vectors, angular=_vectors),
              pose_covariance=st.lists(f64, max_size=40)),
    st.builds(GeofenceMsg, header=_headers, origin_lat_deg=f64, zones=st.lists(st.builds(
        GeofenceZone, zone_id=text, kind=st.sampled_from(["polygon", "circle"]),
        vertices=st.lists(_vectors, max_size=5),
        holes=st.lists(st.lists(_vectors, max_size=3), max_size=2),
        radius_m=f64, priority=i64), max_size=3)),
    st.builds(ArrayMsg, header=_headers, data=st.none() | _arrays),
    st.builds(Event, header=_headers, severity=st.sampled_from(["info", "warn", "error"]),
              message=text, data=st.dictionaries(text, text, max_size=3)),
    st.builds(Clock, stamp_ns=i64),
    st.builds(BytesBlob, header=_headers, data=st.binary(max_size=32)),
    st.builds(ArrayBlob, array=_arrays, name=text, values=st.lists(i64, max_size=5)),
)


def encoded(msg: Any) -> tuple[bytes, list[bytes]]:
    """A message's payload and its array buffers, as bytes a socket would deliver."""
    payload, arrays = codec(type(msg)).encode(msg)
    return payload, [np.asarray(a).tobytes() for a in arrays]


_FIELD_NAMES = sorted({f.encode_name for cls in (*MESSAGE_TYPES, Header, Vector3, Pose, Twist,
                                                 GeofenceZone)
                       for f in msgspec.structs.fields(cls)})
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 3),
                    st.integers(-(2**63), 2**64 - 1), f64, text, st.binary(max_size=20))
_array_refs = st.builds(
    lambda *ref: msgpack.ExtType(ARRAY_EXT, msgpack.packb(list(ref))),
    st.integers(-2, 3) | _leaves,
    st.sampled_from([*DTYPES, "O", "V0", "V3", "(1000000000,)f8", "U2000000000", "foo"])
    | _leaves | st.lists(st.tuples(text, st.sampled_from(DTYPES)), max_size=2),
    st.lists(st.integers(-2, 40), max_size=3) | st.sampled_from([[2**62], [1] * 70]) | _leaves,
)
msgpack_values = st.recursive(
    st.one_of(_leaves, _array_refs,
              st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=10))),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(_FIELD_NAMES), inner, max_size=4)),
    max_leaves=12,
)
"""MessagePack documents shaped like messages: field names with values of any type, and
array references (ARRAY_EXT) that point anywhere."""
_payload_bytes = st.one_of(
    mutated(messages.map(lambda m: encoded(m)[0])),
    msgpack_values.map(msgpack.packb),
    mutated(msgpack_values.map(msgpack.packb)),
    st.binary(max_size=64),
)


def _encoded_header(*fields: Any) -> bytes:
    return HEADER_ENCODER.encode(FrameHeader(*fields))


_u64 = st.integers(-(2**63), 2**64 - 1)
header_bytes = st.one_of(
    st.builds(_encoded_header,
              st.sampled_from([c.type_name for c in map(codec, MESSAGE_TYPES)]) | text,
              st.sampled_from([c.schema_hash for c in map(codec, MESSAGE_TYPES)]) | _u64,
              text, _u64, _u64, _u64),
    st.lists(_leaves, max_size=8).map(msgpack.packb),
)
headers = st.one_of(mutated(header_bytes), st.binary(max_size=48),
                    st.sampled_from(_SPLICES))


@st.composite
def frame_lists(draw: Any) -> list[bytes]:
    """What a subscription's socket hands over: [topic, header, payload, *buffers], from a
    real message and a header that mostly names its type, then changed frame by frame."""
    msg = draw(messages)
    payload, buffers = encoded(msg)
    message_codec = codec(type(msg))
    header = _encoded_header(message_codec.type_name, message_codec.schema_hash,
                             draw(st.sampled_from(["pub", ""]) | text), draw(_u64),
                             draw(_u64), draw(_u64))
    frames = [topic_frame(TOPIC), header, payload, *buffers]
    for _ in range(draw(st.integers(0, 3))):
        change = draw(st.sampled_from(_FRAME_CHANGES))
        if frames:
            change(draw, frames, draw(st.integers(0, len(frames) - 1)))
    return frames


def _mutate_frame(draw: Any, frames: list[bytes], i: int) -> None:
    frames[i] = mutate(draw, frames[i])


def _drop_frame(draw: Any, frames: list[bytes], i: int) -> None:
    del frames[i]


def _add_frame(draw: Any, frames: list[bytes], i: int) -> None:
    frames.insert(i, draw(st.binary(max_size=64) | st.sampled_from(_SPLICES)))


def _other_header(draw: Any, frames: list[bytes], i: int) -> None:
    frames[1:2] = [draw(headers)]


def _other_payload(draw: Any, frames: list[bytes], i: int) -> None:
    frames[2:3] = [draw(_payload_bytes)]


def _oversized(draw: Any, frames: list[bytes], i: int) -> None:
    frames.append(bytes(_LISTENER_LIMIT))


_FRAME_CHANGES = (_mutate_frame, _mutate_frame, _drop_frame, _add_frame, _other_header,
                  _other_payload, _oversized)
_LISTENER_LIMIT = 64 * 1024


class Listener:
    """A node that never starts, with a subscription to TOPIC for each message type and one
    of any type: `Subscription._deliver` is what runs on each frame list a socket reads."""

    def __init__(self) -> None:
        self.node = Node("fuzz", config=BusConfig.from_env(clock="wall", auto_registry=False))
        self.node.max_message_bytes = _LISTENER_LIMIT  # so that the size check is reached
        self.node.log.setLevel(logging.CRITICAL)  # each rejection is logged; we count them
        self.got: list[Any] = []
        self.subs = [self.node.subscribe(TOPIC, cls, self.got.append)
                     for cls in (*MESSAGE_TYPES, None)]
        atexit.register(self.close)

    def close(self) -> None:
        for sub in self.subs:
            sub.socket.close(linger=0)
        self.node._wake_r.close()
        self.node._wake_w.close()


listener = functools.cache(Listener)
_SAMPLE_ODOMETRY = Odometry(header=Header(stamp_ns=1, frame_id="map"))


def _sample_frames() -> list[bytes]:
    message_codec = codec(Odometry)
    return [topic_frame(TOPIC), _encoded_header(message_codec.type_name,
                                                message_codec.schema_hash, "pub", 1, 2, 3),
            encoded(_SAMPLE_ODOMETRY)[0]]


@target("frames", frame_lists(), _sample_frames(), scale=100_000)
def check_frames(frames: list[bytes]) -> Outcome:
    """Each subscription either delivers the frames or counts them as rejected; a typed
    one delivers its type only; an untyped one's plain data fails with ValueError or
    TypeError only (what `fleetbus topic echo` and the Foxglove bridge catch)."""
    outcome: Outcome = "rejected"
    for sub in listener().subs:
        sub._last_seq.clear()  # each input from a clean state: a failure reproduces alone
        rejected_before = sub.rejected
        sub._deliver(frames)
        delivered = list(listener().got)
        listener().got.clear()
        assert len(delivered) + sub.rejected - rejected_before == 1, "lost without a count"
        for msg in delivered:
            if sub.cls is None:
                try:
                    bounded(msg.to_builtins)
                except (ValueError, TypeError) as exc:
                    rejected(exc)
            else:
                assert isinstance(msg, sub.cls)
                outcome = "accepted"
    return outcome


@target("header", headers, _sample_frames()[1], scale=100_000)
def check_header(data: bytes) -> Outcome:
    """The header decoder raises msgspec's errors only (what `_deliver` and `_skip`
    catch), in bounded memory."""
    try:
        header = bounded(lambda: HEADER_DECODER.decode(data))
    except msgspec.MsgspecError as exc:
        return rejected(exc)
    assert isinstance(header, FrameHeader)
    assert f"{header.type_name}#{header.schema_hash:016x}"  # how _deliver names a mismatch
    return "accepted"


@st.composite
def payloads(draw: Any) -> tuple[type, bytes, list[bytes]]:
    """(message type, payload, buffers), mostly the type's own message, mutated."""
    msg = draw(messages)
    payload, buffers = encoded(msg)
    if draw(st.booleans()):
        payload = mutate(draw, payload) if draw(st.booleans()) else draw(_payload_bytes)
    if draw(st.integers(0, 3)) == 0:
        buffers = draw(st.lists(mutated(st.sampled_from(buffers or [b""])), max_size=3))
    cls = type(msg) if draw(st.integers(0, 3)) else draw(st.sampled_from(MESSAGE_TYPES))
    return cls, payload, buffers


@target("payload", payloads(), (Odometry, *encoded(_SAMPLE_ODOMETRY)), scale=100_000)
def check_payload(case: tuple[type, bytes, list[bytes]]) -> Outcome:
    """A typed decoder raises DecodeError only, `to_builtins` ValueError or TypeError only;
    both in bounded memory."""
    cls, payload, buffers = case
    outcome: Outcome = "rejected"
    try:
        msg = bounded(lambda: codec(cls).decode(payload, buffers))
        assert isinstance(msg, cls)
        outcome = "accepted"
    except DecodeError as exc:
        rejected(exc)
    try:
        bounded(lambda: to_builtins(payload, buffers))
    except (ValueError, TypeError) as exc:
        rejected(exc)
    return outcome


DEEP_MARK = "\x00deep\x00"
"""A parameter value that `registry_messages` replaces with MessagePack nested deeply (a
Python list that deep cannot even be encoded)."""
_params = st.builds(p.ParamInfo, name=text, type=text,
                    value=st.sampled_from([DEEP_MARK]) | _leaves | st.lists(_leaves, max_size=3))
_node_infos = st.builds(
    p.NodeInfo, uid=text, name=text, host=text, pid=i64, context=text, started_ns=i64,
    data_urls=st.lists(text, max_size=2),
    publishers=st.lists(st.builds(p.PublisherInfo, topic=text, type_name=text,
                                  schema_hash=i64, rate_hz=f64), max_size=2),
    subscriptions=st.lists(st.builds(p.SubscriptionInfo, topic=text, type_name=text,
                                     schema_hash=i64, max_age_s=st.none() | f64), max_size=2),
    params=st.lists(_params, max_size=2), counters=st.dictionaries(text, i64, max_size=2),
)
_peers = st.builds(p.PeerPublisher, uid=text, node=text, host=text, context=text,
                   urls=st.lists(text, max_size=2), type_name=text, schema_hash=i64)
_protocol_messages = st.one_of(
    st.builds(p.Announce, node=_node_infos), st.builds(p.Bye, uid=text), st.just(p.Snapshot()),
    st.builds(p.PeerSync, registry=text, nodes=st.lists(_node_infos, max_size=2)),
    st.builds(p.AnnounceAck, peers=st.dictionaries(text, st.lists(_peers, max_size=2),
                                                   max_size=2), complete=st.booleans()),
    st.builds(p.TopicPeers, topic=text, peers=st.lists(_peers, max_size=2),
              complete=st.booleans()),
    st.builds(p.Notice, level=text, text=text),
    st.builds(p.Graph, registry=text, started_ns=i64, nodes=st.lists(_node_infos, max_size=2),
              problems=st.lists(text, max_size=2), silent_s=st.dictionaries(text, f64,
                                                                           max_size=2)),
)


@st.composite
def _registry_bytes(draw: Any) -> bytes:
    data = p.ENCODER.encode(draw(_protocol_messages))
    deep = b"\x91" * draw(st.integers(0, 5000)) + b"\xc0"
    return data.replace(msgpack.packb(DEEP_MARK), deep)


registry_messages = st.one_of(mutated(_registry_bytes()), msgpack_values.map(msgpack.packb),
                              st.binary(max_size=64))


@target("registry", registry_messages, p.ENCODER.encode(p.Bye(uid="u1")), scale=100_000)
def check_registry(data: bytes) -> Outcome:
    """The registry protocol's decoders raise msgspec.DecodeError only: what the registry,
    nodes and graph watchers catch (anything else stopped the registry)."""
    outcome: Outcome = "rejected"
    for decoder in (p.REQUEST_DECODER, p.REPLY_DECODER):
        try:
            bounded(lambda decoder=decoder: decoder.decode(data))
            outcome = "accepted"
        except msgspec.DecodeError as exc:
            rejected(exc)
    return outcome


# -- graph files ----------------------------------------------------------------------------

_node_names = st.sampled_from(["talker", "echo", "sim", "a/b", "/abs", "", "x" * 300])
_node_docs = st.fixed_dictionaries(
    {"name": _node_names | st.sampled_from(["${vehicle_id}_x"]),
     "class": st.sampled_from(["fleetbus.nodes.demo:Talker", "nocolon", "${cls}"])},
    optional={
        "params": st.dictionaries(st.sampled_from(["rate_hz", "vehicle_id", "x"]),
                                  json_junk | st.sampled_from(["${rate}", "${vehicles}"]),
                                  max_size=3),
        "depends_on": st.lists(_node_names, max_size=3),
        "restart": st.sampled_from(["never", "on-failure", "always", "sometimes"]),
        "cmd": st.lists(text, max_size=2), "namespace": st.sampled_from(["", "ns", "/a/b/"]),
        "process": st.sampled_from(["p1", "${vehicle_id}"]),
        "env": st.dictionaries(text, text, max_size=2),
        "max_restarts": st.integers(-1, 10), "health_timeout": f64,
    },
)
_vehicle_docs = st.fixed_dictionaries(
    {"id": st.sampled_from(["d1", "s1", "c1", ""]),
     "type": st.sampled_from(["quadrotor", "vessel", "car", "blimp"])},
    optional={"start": st.dictionaries(st.sampled_from(["x", "y", "z", "yaw"]), f64, max_size=4),
              "model": st.dictionaries(st.sampled_from(["mass_kg"]), f64, max_size=1),
              "params": st.dictionaries(_node_names, st.dictionaries(text, st.integers(),
                                                                     max_size=2), max_size=2)},
)
_budget_docs = st.fixed_dictionaries(
    {"name": st.sampled_from(["chain", ""]), "source": st.sampled_from(["/imu", "imu", ""]),
     "sink": st.sampled_from(["/cmd", "${vehicle_id}/cmd"]), "p99_ms": f64 | st.integers(-1, 99)},
    optional={"p50_ms": f64, "window_s": f64, "per_vehicle": st.booleans()},
)
_include_docs = st.fixed_dictionaries(
    {"file": st.sampled_from(["inc.yaml", "missing.yaml", "g.yaml", "", ".", "a\x00b",
                              "../" * 40 + "x", "x" * 5000])},
    optional={"args": st.dictionaries(st.sampled_from(["rate", "cls"]), json_junk, max_size=2),
              "namespace": st.sampled_from(["ns", "/ns/", ""])},
)
graph_docs = st.fixed_dictionaries({}, optional={
    "name": text,
    "args": st.dictionaries(st.sampled_from(["rate", "cls", "fleet", "seed"]),
                            st.integers(0, 99) | text | st.just("${rate}")
                            | st.lists(_vehicle_docs, max_size=2), max_size=3),
    "env": st.dictionaries(text, text, max_size=2),
    "include": st.lists(_include_docs, max_size=2),
    "nodes": st.lists(_node_docs, max_size=4),
    "vehicles": st.lists(_vehicle_docs, max_size=3) | st.just("${fleet}"),
    "vehicle_nodes": st.lists(_node_docs, max_size=3),
    "latency_budgets": st.lists(_budget_docs, max_size=2),
})
YAML_TOKENS = ("- ", ": ", "[", "]", "{", "}", "&a ", "*a", "!!int ", "!!float ",
               "!!python/object:os.system ", "!!binary ", "\t", "%YAML 1.1\n", "---\n", "? ",
               "<<: *a\n", "${x}", "${", "'", '"', "#", "\x00", "\x01", "2020-13-45",
               "1" * 5000, "[" * 1000, "\xff")


@st.composite
def yaml_texts(draw: Any, docs: st.SearchStrategy[Any]) -> bytes:
    """A document written as YAML (aliases for shared parts), then changed as text: YAML
    syntax inserted or the bytes mutated."""
    try:
        data = yaml_dump(draw(broken(docs, yaml_junk)))
    except RecursionError:  # PyYAML writes recursively too: junk nested too deep to write
        data = b"[" * 1000
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + draw(st.sampled_from(YAML_TOKENS)).encode() + data[at:]
        else:
            data = mutate(draw, data, most=2)
    return data


def yaml_dump(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


_set_items = st.lists(st.sampled_from([
    "rate=5", "talker.rate_hz=7", "rate=[", "x", "=", "=x", "rate=\x01", "rate=2020-13-45",
    "rate=" + "[" * 1000, "rate=!!int x", "nobody.x=1", "fleet=" + "1" * 5000,
]) | text, max_size=2)
graph_cases = st.tuples(yaml_texts(graph_docs), yaml_texts(graph_docs), _set_items)
_SAMPLE_GRAPH = yaml_dump({"nodes": [{"name": "talker", "class": "fleetbus.nodes.demo:Talker",
                                      "params": {"rate_hz": "${rate}"}}],
                           "args": {"rate": 5}})


@target("graph", graph_cases, (_SAMPLE_GRAPH, b"", []), scale=5_000,
        deadline_ms=YAML_DEADLINE_MS)
def check_graph(case: tuple[bytes, bytes, list[str]]) -> Outcome:
    """`Graph.load` (what `fleetbus launch` and `check` call) returns a graph or raises
    GraphError, which the command line reports; an included file and --set items too."""
    main, included, sets = case
    folder = scratch("graph")
    (folder / "g.yaml").write_bytes(main)
    (folder / "inc.yaml").write_bytes(included)
    try:
        graph = Graph.load(str(folder / "g.yaml"), sets=sets)
    except GraphError as exc:
        return rejected(exc)
    assert isinstance(graph, Graph)
    return "accepted"


# -- GeoJSON geofences ----------------------------------------------------------------------


@st.composite
def geojson_docs(draw: Any) -> dict[str, Any]:
    """A FeatureCollection (or one Feature) of polygons, multipolygons and circles near a
    random place, with every property the reader knows and some it does not."""
    lat0, lon0 = draw(st.floats(-89.0, 89.0)), draw(st.floats(-179.0, 179.0))
    offsets = st.floats(-0.01, 0.01)

    def ring() -> list[list[float]]:
        points = [[lon0 + draw(offsets), lat0 + draw(offsets)]
                  for _ in range(draw(st.integers(3, 6)))]
        return [*points, points[0]] if draw(st.booleans()) else points

    def geometry() -> dict[str, Any]:
        kind = draw(st.sampled_from(["Polygon", "MultiPolygon", "Point"]))
        if kind == "Polygon":
            return {"type": kind, "coordinates": [ring() for _ in range(draw(st.integers(1, 2)))]}
        if kind == "MultiPolygon":
            return {"type": kind, "coordinates": [[ring()] for _ in range(draw(st.integers(1, 2)))]}
        return {"type": kind, "coordinates": [lon0 + draw(offsets), lat0 + draw(offsets)]}

    properties = st.fixed_dictionaries({}, optional={
        "id": text | st.integers(), "inclusion": st.booleans(),
        "type": st.sampled_from(["inclusion", "exclusion"]), "floor_m": f64 | st.none(),
        "ceiling_m": f64 | st.none(), "action": st.sampled_from(["report", "hold", "fly"]),
        "priority": st.integers(-3, 3), "radius_m": st.floats(0.1, 500.0),
        "vehicle_types": st.lists(st.sampled_from(["quadrotor", "vessel", "car"]), max_size=2),
        "stroke": st.just("#ff0000"),
    })
    features = [{"type": "Feature", "geometry": geometry(), "properties": draw(properties)}
                for _ in range(draw(st.integers(0, 3)))]
    if features and draw(st.integers(0, 4)) == 0:
        return features[0]
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if draw(st.booleans()):
        doc["fleetbus:origin"] = {"lat_deg": lat0, "lon_deg": lon0, "alt_m": draw(f64)}
    return doc


@st.composite
def geojson_cases(draw: Any) -> tuple[str, Any, Any, Any]:
    """(form, source, origin, vehicle type): the document as a mapping, as JSON text, or
    as a file, mutated at its structure or as text."""
    doc = draw(broken(geojson_docs(), json_junk))
    form = draw(st.sampled_from(["mapping", "text", "file"]))
    if not isinstance(doc, dict):  # as a mapping, the signature's job; as text, the parser's
        form = draw(st.sampled_from(["text", "file"]))
    source: Any = doc
    if form != "mapping":
        data = mutate(draw, json.dumps(doc).encode(), most=2)
        source = data if form == "file" else data.decode(errors="replace")
    origin = draw(st.none() | st.lists(f64 | st.sampled_from(HUGE_INTS) | st.none(),
                                       min_size=2, max_size=4))
    vehicle_type = draw(st.sampled_from([None, "quadrotor", "vessel", "car", "blimp"]))
    return form, source, origin, vehicle_type


_SAMPLE_GEOJSON = {"type": "FeatureCollection", "features": [{
    "type": "Feature", "properties": {"id": "yard"}, "geometry": {
        "type": "Polygon", "coordinates": [[[10.0, 59.0], [10.01, 59.0], [10.0, 59.01]]]}}]}


@target("geojson", geojson_cases(), ("mapping", _SAMPLE_GEOJSON, None, None), scale=10_000)
def check_geojson(case: tuple[str, Any, Any, Any]) -> Outcome:
    """`load_geojson` (the geofence server's reader) returns a fence that travels as a
    message, or raises GeofenceError, which the server reports."""
    form, source, origin, vehicle_type = case
    if form == "file":
        path = scratch("geojson") / "fence.geojson"
        path.write_bytes(source)
        source = path
    try:
        fence = load_geojson(source, origin, vehicle_type)
    except GeofenceError as exc:
        return rejected(exc)
    codec(GeofenceMsg).encode(fence_to_msg(fence))  # what the geofence server publishes
    return "accepted"


# -- fault plans ----------------------------------------------------------------------------

VEHICLES = {"drone1": "quadrotor", "ship1": "vessel", "car1": "car"}
_plan_entries = st.fixed_dictionaries(
    {"at": st.floats(0, 100) | st.integers(0, 100),
     "target": st.sampled_from(["drone1/gnss", "*/imu", "ship1", "car1/wheel_speed",
                                "drone1", "ship1/speed_log", "nobody/x", "", "drone1/"]),
     "type": st.sampled_from(["dropout", "delay", "noise", "bias", "stuck", "glitch", "rate",
                              "intermittent", "link_loss", "off", "delayed", "garbage",
                              "wrong", "slow", False, "boom"])},
    optional={"for": st.floats(0, 100), "delay_s": st.floats(0, 2), "sigma": st.floats(0, 2),
              "offset": st.floats(-5, 5) | st.lists(st.floats(-5, 5), min_size=1, max_size=6),
              "rate_hz": st.floats(0, 50), "probability": st.floats(0, 1.2)},
)


@st.composite
def plan_cases(draw: Any) -> tuple[str, Any]:
    """(form, source): a list of entries as given inline, as YAML text (plain or under
    `faults:`), or as a file."""
    entries = draw(broken(st.lists(_plan_entries, max_size=4), yaml_junk))
    form = draw(st.sampled_from(["list", "text", "faults", "file"]))
    if form == "list":
        return form, entries
    doc = {"faults": entries} if form == "faults" else entries
    data = draw(yaml_texts(st.just(doc)))
    return form, (data if form == "file" else data.decode(errors="replace"))


@target("faults", plan_cases(), ("list", [{"at": 1, "target": "drone1/gnss", "type": "off"}]),
        scale=10_000, deadline_ms=YAML_DEADLINE_MS)
def check_plan(case: tuple[str, Any]) -> Outcome:
    """`load_plan` returns faults the injector can apply, or raises FaultPlanError."""
    form, source = case
    if form == "file":
        path = scratch("faults") / "plan.yaml"
        path.write_bytes(source)
        source = path
    try:
        faults = load_plan(source, VEHICLES)
    except FaultPlanError as exc:
        return rejected(exc)
    injector = FaultInjector(faults, np.random.default_rng(0))
    for fault in faults:
        injector.transitions(fault.start_s)
        injector.link_lost(fault.vehicle, fault.start_s)
        if fault.sensor is not None:
            size = SENSORS[VEHICLES[fault.vehicle]][fault.sensor]
            injector.apply(fault.vehicle, fault.sensor, fault.start_s, [1.0] * size)
    return "accepted"


# -- MAVLink: the ground-station face and the PX4 link -------------------------------------

_INT_RANGES = {"int8_t": 7, "int16_t": 15, "int32_t": 31, "int64_t": 63}
_UINT_BITS = {"uint8_t": 8, "uint16_t": 16, "uint32_t": 32, "uint64_t": 64}
_f32 = st.floats(width=32) | st.sampled_from([NAN, INF, -INF, -0.0, 3.4e38, 1e-45])
_COMMANDS = (mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, mavlink.MAV_CMD_MISSION_START,
             mavlink.MAV_CMD_NAV_LOITER_UNLIM, mavlink.MAV_CMD_NAV_LAND,
             mavlink.MAV_CMD_DO_PAUSE_CONTINUE, mavlink.MAV_CMD_DO_SET_MODE,
             mavlink.MAV_CMD_REQUEST_MESSAGE, mavlink.MAV_CMD_REQUEST_AUTOPILOT_CAPABILITIES,
             mavlink.MAV_CMD_GET_HOME_POSITION, mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0, 65535)
_PARAMS = st.sampled_from([0.0, 1.0, -1.0, 0.4, 1e-30, 1e30, NAN, INF, -INF, 4.0, 6.0, 129.0,
                           float(mavlink.MAVLINK_MSG_ID_HIL_STATE_QUATERNION),
                           float(mavlink.MAVLINK_MSG_ID_AUTOPILOT_VERSION),
                           float(mavlink.MAVLINK_MSG_ID_HOME_POSITION)]) | _f32
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "target_system": st.sampled_from([0, 1, 2]), "target_component": st.sampled_from([0, 1, 2]),
    "command": st.sampled_from(_COMMANDS), "param1": _PARAMS, "param2": _PARAMS,
    "mission_type": st.sampled_from([0, 1, 2, 255]), "seq": st.sampled_from([0, 1, 2, 65535]),
    "base_mode": st.sampled_from([0, 1, 128, 129]),
    "custom_mode": st.sampled_from([3, 4, 5, 6, 9, 10, 11, 15, 21, 2**32 - 1]),
    "flags": st.sampled_from([0, 1, 2**64 - 1]), "mode": st.sampled_from([0, 128, 129]),
    "time_usec": st.sampled_from([0, 1, 8000, 2**64 - 1]),
}
"""Values that steer a field into the handlers' branches (half the time)."""
HANDLED = tuple(mavlink.mavlink_map[i] for i in (
    mavlink.MAVLINK_MSG_ID_COMMAND_LONG, mavlink.MAVLINK_MSG_ID_COMMAND_INT,
    mavlink.MAVLINK_MSG_ID_SET_MODE, mavlink.MAVLINK_MSG_ID_MISSION_REQUEST_LIST,
    mavlink.MAVLINK_MSG_ID_MISSION_REQUEST_INT, mavlink.MAVLINK_MSG_ID_MISSION_REQUEST,
    mavlink.MAVLINK_MSG_ID_MISSION_ACK, mavlink.MAVLINK_MSG_ID_MISSION_COUNT,
    mavlink.MAVLINK_MSG_ID_MISSION_CLEAR_ALL, mavlink.MAVLINK_MSG_ID_PARAM_REQUEST_READ,
    mavlink.MAVLINK_MSG_ID_PARAM_SET, mavlink.MAVLINK_MSG_ID_HEARTBEAT,
    mavlink.MAVLINK_MSG_ID_HIL_ACTUATOR_CONTROLS))
"""What the face and the PX4 link act on (the rest they ignore or count)."""
ALL_MESSAGES = tuple(mavlink.mavlink_map.values())


def _field_values(kind: str, length: int) -> st.SearchStrategy[Any]:
    if kind == "char":
        return st.binary(min_size=1 if not length else 0, max_size=max(length, 1))
    if kind in ("float", "double"):
        one: st.SearchStrategy[Any] = _f32 if kind == "float" else f64
    elif kind in _INT_RANGES:
        bits = _INT_RANGES[kind]
        one = st.integers(-(2**bits), 2**bits - 1)
    else:
        one = st.integers(0, 2 ** _UINT_BITS[kind] - 1)
    return st.lists(one, min_size=length, max_size=length) if length else one


@st.composite
def mavlink_packets(draw: Any, favoured: tuple[type, ...] = HANDLED) -> bytes:
    """One packet of a message type (mostly a favoured one) with any field values, MAVLink
    1 or 2, signed or not, from any system."""
    cls = draw(st.sampled_from(favoured) if draw(st.integers(0, 3)) else
               st.sampled_from(ALL_MESSAGES))
    lengths = dict(zip(cls.ordered_fieldnames, cls.array_lengths, strict=True))
    values = []
    for name, kind in zip(cls.fieldnames, cls.fieldtypes, strict=True):
        steered = cls in HANDLED and name in _FIELD_VALUES and draw(st.booleans())
        values.append(draw(_FIELD_VALUES[name] if steered else
                           _field_values(kind, lengths[name])))
    mav = mavlink.MAVLink(None, draw(st.integers(0, 255)), draw(st.integers(0, 255)))
    mav.seq = draw(st.integers(0, 255))
    version1 = cls.id < 256 and draw(st.integers(0, 4)) == 0
    if not version1 and draw(st.integers(0, 4)) == 0:
        mav.signing.secret_key = bytes(32)
        mav.signing.sign_outgoing = True
    return cls(*values).pack(mav, force_mavlink1=version1)


def reseal(packet: bytes) -> bytes:
    """The packet with its checksum made right for its (mutated) header and payload again,
    so that a mutation gets past the CRC check into the message handlers."""
    data = bytearray(packet)
    if len(data) < 10 or data[0] not in (mavlink.PROTOCOL_MARKER_V1,
                                         mavlink.PROTOCOL_MARKER_V2):
        return packet
    size = 10 if data[0] == mavlink.PROTOCOL_MARKER_V2 else 6
    message_id = int.from_bytes(data[7:10] if size == 10 else data[5:6], "little")
    end = size + data[1]
    cls = mavlink.mavlink_map.get(message_id)
    if cls is None or len(data) < end + 2:
        return packet
    crc = mavlink.x25crc(bytes(data[1:end]))
    crc.accumulate(bytes([cls.crc_extra]))
    data[end:end + 2] = crc.crc.to_bytes(2, "little")
    return bytes(data)


@st.composite
def mavlink_datagrams(draw: Any, favoured: tuple[type, ...] = HANDLED) -> bytes:
    """Up to four packets in one datagram: as sent, mutated (CRC then wrong), mutated and
    resealed (it reaches the handler), or garbage between them."""
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["packet", "packet", "mutated", "resealed", "garbage"]))
        if kind == "garbage":
            parts.append(draw(st.binary(max_size=32)))
            continue
        packet = draw(mavlink_packets(favoured))
        if kind != "packet":
            packet = mutate(draw, packet, most=2)
        parts.append(reseal(packet) if kind == "resealed" else packet)
    return b"".join(parts)


_FENCE = Geofence([Zone.polygon("yard", [(-100, -100), (100, -100), (100, 100), (-100, 100)],
                                holes=[[(-10, -10), (10, -10), (10, 10), (-10, 10)]]),
                   Zone.circle_zone("pond", (50.0, 50.0), 8.0, inclusion=False)],
                  (59.9, 10.7, 50.0))
_ESTIMATE = Estimate(0.0, np.array([100.0, 200.0, 30.0]), np.array([1.0, 0.0, 0.0, 0.0]),
                     np.array([5.0, 0.0, 0.0]), np.zeros(3), np.zeros((6, 6)), np.zeros((6, 6)))
_SAMPLE_COMMAND = mavlink.MAVLink_command_long_message(
    1, 1, mavlink.MAV_CMD_NAV_RETURN_TO_LAUNCH, 0, 0, 0, 0, 0, 0, 0, 0).pack(
        mavlink.MAVLink(None, 255, 190))


@target("mavlink-gcs", mavlink_datagrams(), _SAMPLE_COMMAND, scale=10_000)
def check_gcs(datagram: bytes) -> Outcome:
    """`GcsFace.handle_datagram` never raises; each problem says what it was; the face
    still reports afterwards."""
    face = GcsFace("quadrotor", origin=(59.9, 10.7, 50.0))
    face.set_fence(_FENCE)
    face.update_estimate(_ESTIMATE, 0.0)
    handled = face.handle_datagram(datagram, 0.5)
    for kind, what in handled.problems:
        assert kind and what.strip(), handled.problems
    assert all(isinstance(reply, bytes) for reply in handled.replies)
    assert face.status(0.6) and face.telemetry(0.6)
    return "rejected" if handled.problems else "accepted"


_PX4_BAD = ("bad_crc", "garbage", "bad_controls", "stale_actuators", "bad_command")
_SAMPLE_HEARTBEAT = mavlink.MAVLink_heartbeat_message(
    mavlink.MAV_TYPE_QUADROTOR, mavlink.MAV_AUTOPILOT_PX4, 0, 0, 0, 3).pack(
        mavlink.MAVLink(None, 1, 1))


@target("px4", mavlink_datagrams(), _SAMPLE_HEARTBEAT, scale=10_000)
def check_px4(data: bytes) -> Outcome:
    """`Px4Link.receive` never raises, counts bad input with a message, and the link still
    steps afterwards."""
    link = Px4Link(HilBody("multirotor", None, None))  # new: a stream's leftovers are its own
    before = sum(link.counters.get(k, 0) for k in _PX4_BAD)
    assert isinstance(link.receive(data), bytes)
    assert isinstance(link.advance(), bytes)  # a step: what the lockstep loop runs next
    if sum(link.counters.get(k, 0) for k in _PX4_BAD) == before:
        return "accepted"
    assert link.last_error.strip()
    return "rejected"


# -- ArduPilot's servo packets --------------------------------------------------------------


@st.composite
def servo_cases(draw: Any) -> tuple[str, list[bytes]]:
    """(frame, datagrams): servo packets as SITL sends them, in or out of sequence, at any
    frame rate and any PWM, sometimes mutated or replaced by garbage."""
    frame = draw(st.sampled_from(["quad", "rover", "boat"]))
    channels = draw(st.sampled_from([16, 32]))
    count = draw(st.integers(0, 2**32 - 1))
    packets = []
    for _ in range(draw(st.integers(1, 4))):
        count = (count + draw(st.sampled_from([1, 1, 1, 0, 2, -1, 1000]))) % 2**32
        rate = draw(st.sampled_from([1, 50, 400, 1200, 65535, 0]) | st.integers(0, 65535))
        pwm = draw(st.lists(st.sampled_from([0, 1000, 1500, 2000, 65535])
                            | st.integers(0, 65535), min_size=channels, max_size=channels))
        packet = encode_servo(ServoPacket(rate, count, tuple(pwm)))
        if not draw(st.integers(0, 3)):
            packet = (mutate(draw, packet, most=2) if draw(st.booleans())
                      else draw(st.binary(max_size=80)))
        packets.append(packet)
    return frame, packets


def _refuse(token: str) -> Any:
    raise AssertionError(f"{token} sent to ArduPilot")


@target("ardupilot", servo_cases(),
        ("quad", [encode_servo(ServoPacket(400, 1, (1000,) * 16))]), scale=10_000)
def check_ardupilot(case: tuple[str, list[bytes]]) -> Outcome:
    """`JsonPhysics.handle` never raises; it answers a finite JSON state or nothing, and
    counts what it refused with a message."""
    frame, packets = case
    physics = make_physics(frame)
    outcome: Outcome = "accepted"
    for packet in packets:
        before = sum(physics.counters[k] for k in ERRORS)
        reply = physics.handle(packet)
        if sum(physics.counters[k] for k in ERRORS) > before:
            assert physics.last_error and physics.last_error.strip()
            outcome = "rejected"
        if reply is not None:
            state = json.loads(reply, parse_constant=_refuse)
            assert math.isfinite(state["timestamp"])
    return outcome


# -- the properties, at the default scale ---------------------------------------------------


def test_frames_are_delivered_or_counted_by_every_subscription():
    run(TARGETS["frames"])


def test_frame_headers_decode_or_raise_msgspec_errors_in_bounded_memory():
    run(TARGETS["header"])


def test_payloads_decode_or_raise_decode_errors_in_bounded_memory():
    run(TARGETS["payload"])


def test_registry_messages_decode_or_raise_msgspec_decode_errors():
    run(TARGETS["registry"])


def test_graph_files_load_or_raise_graph_errors():
    run(TARGETS["graph"])


def test_geojson_geofences_load_or_raise_geofence_errors():
    run(TARGETS["geojson"])


def test_fault_plans_load_or_raise_fault_plan_errors():
    run(TARGETS["faults"])


def test_mavlink_datagrams_never_raise_in_the_ground_station_face():
    run(TARGETS["mavlink-gcs"])


def test_mavlink_bytes_never_raise_in_the_px4_link():
    run(TARGETS["px4"])


def test_servo_packets_never_raise_in_the_ardupilot_backend():
    run(TARGETS["ardupilot"])


# -- declared lengths are not allocated -----------------------------------------------------


@pytest.mark.parametrize("prefix", HUGE_PREFIXES, ids=lambda b: b.hex())
def test_declared_huge_lengths_allocate_nothing(prefix):
    """msgspec and msgpack check a declared length against the bytes left before they
    allocate: 2**32 - 1 items declared in five bytes cost nothing."""
    decoders = [HEADER_DECODER.decode, msgspec.msgpack.decode, to_builtins,
                p.REQUEST_DECODER.decode, p.REPLY_DECODER.decode,
                *(codec(cls).decode for cls in MESSAGE_TYPES)]
    for data in (prefix, prefix + bytes(100), b"\x81\xa4data" + prefix,
                 b"\x96" + prefix * 6):
        for decode in decoders:
            tracemalloc.start()
            try:
                decode(data)
            except (msgspec.MsgspecError, ValueError):
                pass  # refused: what matters here is what it cost
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
            assert peak < 64 * 1024, (decode, data)


# -- the faults fuzzing found: each input exactly ----------------------------------------------


def test_registry_message_nested_deeply_is_a_decode_error():
    """A node's parameter value nesting 100 000 arrays, in an Announce (to the registry)
    and a PeerSync (both ways): msgspec raised RecursionError, which stopped the registry,
    as it catches msgspec.DecodeError only."""
    info = p.NodeInfo(uid="u", name="/n", host="h", pid=1, context="c", started_ns=0,
                      params=[p.ParamInfo(name="x", type="list", value=DEEP_MARK)])
    for msg, decoders in ((p.Announce(node=info), [p.REQUEST_DECODER]),
                          (p.PeerSync(registry="r", nodes=[info]),
                           [p.REQUEST_DECODER, p.REPLY_DECODER])):
        data = p.ENCODER.encode(msg).replace(msgpack.packb(DEEP_MARK),
                                             b"\x91" * 100_000 + b"\xc0")
        for decoder in decoders:
            with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
                decoder.decode(data)


def test_plain_data_nested_deeper_than_msgpack_allows_says_so():
    """msgpack's StackError has no message at all."""
    with pytest.raises(DecodeError, match="nested deeper"):
        to_builtins(b"\x91" * 100_000 + b"\xc0")


@pytest.mark.parametrize("payload", [
    # found at 100 000 inputs: numpy parses ",c16" with ast.literal_eval -> SyntaxError
    b"\x83\xa5array\xc7\x0b\x01\x93\x00\xa4,c16\x93\x04\x02\x03\xa4name\xa6\xf3\xa3\x90"
    b"\xb1\xc2\x91\xa6values\x91\xcd\x1aP",
    msgpack.packb({"array": msgpack.ExtType(ARRAY_EXT, msgpack.packb([0, "f8," * 5000, [1]]))}),
])
def test_array_references_with_numpy_dtype_syntax_are_decode_errors(payload):
    buffers = [bytes(range(256)) * 2]
    with pytest.raises(DecodeError, match="is not a type string"):
        codec(ArrayBlob).decode(payload, buffers)
    with pytest.raises(DecodeError, match="is not a type string"):
        to_builtins(payload, buffers)


def _graph(folder: Path, data: bytes | str, sets: list[str] | None = None) -> Graph:
    path = folder / "g.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return Graph.load(str(path), sets=sets)


_ONE_VEHICLE = "vehicles: [{id: v1, type: car}]\n"


@pytest.mark.parametrize(("data", "sets", "words"), [
    (b"name: \xff\xfe", [], "not UTF-8 text"),  # UnicodeDecodeError
    ("name: a\x01b", [], "special characters are not allowed"),  # yaml ReaderError
    ("name: 2020-13-45", [], "month must be in 1..12"),  # ValueError from the constructor
    ("name: !!int abc", [], "invalid literal for int()"),
    ('name: !!float ""', [], "(IndexError: string index out of range)"),
    ("name: !!bool x", [], "(KeyError: 'x')"),
    ("name: !!timestamp x", [], "(AttributeError: "),
    ("name: " + "1" * 5000, [], "4300 digits"),
    ("nodes: " + "[" * 1000 + "]" * 1000, [], "nested too deeply"),  # RecursionError
    ("nodes: " + "[" * 150 + "]" * 150, [], "nested deeper than 100 levels"),
    ("args: &a [*a]\n", [], "alias contains itself"),  # RecursionError in _substitute
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
     "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
     "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "args: {z: *f}\n", [], "more than 1000000 values"),  # 10**6 copies, then a hang
    (_ONE_VEHICLE + "vehicle_nodes: 5", [], "Expected `array`, got `int`"),  # TypeError
    (_ONE_VEHICLE + "vehicle_nodes: [{name: a, class: 'a:b'}, 5]", [],
     "Expected `object`, got `int`"),  # AttributeError
    (_ONE_VEHICLE + "vehicle_nodes: [{name: a, class: 'a:b'}, {name: [1]}]", [],
     "Expected `str`, got `array`"),  # TypeError: unhashable
    ('include: [{file: "a\\0b"}]', [], "bad include path"),  # ValueError: embedded null
    ("nodes: []", ["rate=["], "invalid YAML value"),  # a ScannerError from --set
    ("nodes: []", ["rate=\x01"], "invalid YAML value"),
])
def test_graph_file_faults_found_by_fuzzing_are_graph_errors(tmp_path, data, sets, words):
    with pytest.raises(GraphError) as caught:
        _graph(tmp_path, data, sets)
    assert words in str(caught.value)


def test_a_long_depends_on_chain_loads():
    """Each node depending on the next, 1500 deep: the cycle search recursed per node."""
    graph = Graph("chain")
    for i in range(1500):
        graph.add(f"n{i}", "a:b", depends_on=[f"n{i + 1}"] if i < 1499 else [])
    assert validate(graph) == []
    graph.nodes[1499] = msgspec.structs.replace(graph.nodes[1499], depends_on=["n0"])
    assert [problem.message for problem in validate(graph)] == [
        "depends_on cycle: " + " -> ".join([*(f"/n{i}" for i in range(1500)), "/n0"])]


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geometry, "properties": properties}]}


_SQUARE = {"type": "Polygon", "coordinates": [[[10, 59], [10.01, 59], [10.01, 59.01]]]}


@pytest.mark.parametrize(("source", "origin", "words"), [
    (_feature({"type": ["Polygon"], "coordinates": [10, 59]}), (59, 10, 0),
     "unsupported geometry type"),  # TypeError: unhashable list
    (_feature({"type": "Point", "coordinates": [10**400, 59]}, radius_m=5), None,
     "must be [lon, lat]"),  # OverflowError: int too large to convert to float
    (_feature(_SQUARE, floor_m=10**400), None, "'floor_m' must be a number"),
    (_feature({"type": "Point", "coordinates": [10, 59]}, radius_m=10**400), None,
     "'radius_m' must be a number"),
    (_feature(_SQUARE, priority=2**63), None, "outside the 64-bit range"),  # message overflow
    (_feature(_SQUARE), (10**400, 0, 0), "origin must be"),
    ('{"type": "FeatureCollection", "features": [], "n": ' + "1" * 5000 + "}", None,
     "4300 digits"),  # ValueError from json
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", None, "nested too deeply"),
])
def test_geojson_faults_found_by_fuzzing_are_geofence_errors(source, origin, words):
    with pytest.raises(GeofenceError) as caught:
        load_geojson(source, origin)
    assert words in str(caught.value)


def test_a_geojson_file_that_is_not_utf8_is_a_geofence_error(tmp_path):
    path = tmp_path / "fence.geojson"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(GeofenceError, match="can't decode"):
        load_geojson(path)


LAUGHS = "defs:\n  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  - &{b} [{', '.join([f'*{a}'] * 10)}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True))
"""Nine levels of ten aliases each: 10**9 items in 300 bytes of YAML."""


@pytest.mark.parametrize(("source", "words"), [
    ([{"at": 0, "type": "dropout", "target": "drone1/gnss", 1: 2, "zz": 1}],
     "unknown field(s) ['zz', 1]"),  # TypeError: '<' between str and int
    ([{"at": 10**400, "type": "dropout", "target": "drone1/gnss"}],
     "'at' must be a finite number"),  # OverflowError
    ([{"at": 0, "type": "bias", "offset": [1, 2, 10**400], "target": "drone1/gnss"}],
     "'offset' must be a finite number"),
    ("- {at: 2020-13-45}", "month must be in 1..12"),  # ValueError from the constructor
    ("- - - - - - - !!set {!!float }\n", "IndexError: string index out of range"),
    (LAUGHS + "faults: [*i]", "expected a mapping, got [[[...], [...], "),  # 10**9 repr
    (LAUGHS + "faults: [{at: *i, type: dropout, target: drone1/gnss}]",
     "'at' must be a finite number, got [[[...], "),
    ("- " + "[" * 1000, "nested too deeply"),  # RecursionError
])
def test_fault_plan_faults_found_by_fuzzing_are_fault_plan_errors(source, words):
    with pytest.raises(FaultPlanError) as caught:
        load_plan(source, VEHICLES)
    assert words in str(caught.value)


def test_a_fault_plan_file_that_is_not_utf8_is_a_fault_plan_error(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_bytes(b"\xff\xfe- {}")
    with pytest.raises(FaultPlanError, match="not UTF-8"):
        load_plan(path, VEHICLES)


@pytest.mark.parametrize(("param1", "param2"), [
    (NAN, 1000.0), (INF, 1000.0),  # round() raised in receive
    (115.0, INF), (115.0, 0.4), (115.0, 1e-30),  # the next step divided by zero
])
def test_px4_message_interval_faults_found_by_fuzzing_are_survived(param1, param2):
    link = Px4Link(HilBody("multirotor", None, None))
    autopilot = mavlink.MAVLink(None, 1, 1)
    command = mavlink.MAVLink_command_long_message(
        1, 200, mavlink.MAV_CMD_SET_MESSAGE_INTERVAL, 0, param1, param2, 0, 0, 0, 0, 0)
    reply = link.receive(command.pack(autopilot) + _SAMPLE_HEARTBEAT)
    assert mavlink.MAVLink(None).parse_buffer(reply)[0].get_type() == "COMMAND_ACK"
    for _ in range(3):
        assert link.advance()
