"""Publishers and subscriptions: the hot path of the bus.

A node's publishers share the node's XPUB socket; each subscription owns a SUB socket
that connects straight to the publishers the registry names. Everything here runs on the
node's event-loop thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
import zmq

from fleetbus.bus import protocol as p
from fleetbus.bus import security
from fleetbus.bus.clock import CLOCK_TOPIC
from fleetbus.bus.wire import HEADER_DECODER, HEADER_ENCODER, FrameHeader, topic_frame
from fleetbus.messages.base import Message
from fleetbus.messages.codec import Codec, DecodeError, to_builtins

if TYPE_CHECKING:
    from fleetbus.bus.node import Node

M = TypeVar("M", bound=Message)

_MORE = int(zmq.SNDMORE)  # plain ints: pyzmq's enum flags cost a conversion per call
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
RATE_WINDOW_S = 5.0  # topic rates are over this much time (see _RateWindow)
RECV_BATCH = 256  # frames drained per wake-up before other sockets get their turn
DEFAULT_DEPTH = 1000
VANISHED_LINGER_S = 5.0
"""How long a link to a publisher the registry no longer lists is kept. A node whose
loop is blocked (a long solve) misses heartbeats and expires from the registry while
alive; its subscribers keep the link and lose nothing if it comes back in time."""
CLOCK_FRAME = topic_frame(CLOCK_TOPIC)
ANY_TYPE = "*"  # type name a subscription of any type registers (schema hash 0)


class AnyMessage:
    """What a subscription of any type (`msg_type=None`) receives: the raw frame, for
    tools that echo or record topics without importing their message classes."""

    __slots__ = ("buffers", "header", "payload", "topic")

    def __init__(self, topic: str, header: FrameHeader, payload: bytes, buffers: list) -> None:
        self.topic = topic
        self.header = header
        self.payload = payload
        self.buffers = buffers

    def to_builtins(self) -> Any:
        """The message as plain Python data (dicts, lists, numpy arrays)."""
        return to_builtins(self.payload, self.buffers)


class _RateWindow:
    """Messages and bytes counted, turned into rates over the last RATE_WINDOW_S at each
    heartbeat. A rate is messages over the time between the window's first and last
    message times, not over the window's length: a 1 Hz topic reads 1 Hz, where counts
    per heartbeat (0.5 s) read 0 and 2 Hz by turns."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.first_s = self.last_s = 0.0  # monotonic times of the first and last message
        # (heartbeat time, messages, bytes, last message time), oldest first
        self._marks: deque[tuple[float, int, int, float]] = deque(
            [(time.monotonic(), 0, 0, 0.0)])
        self.rate_hz = 0.0
        self.bandwidth_bps = 0.0

    def count_one(self) -> None:
        self.messages += 1
        self.last_s = time.monotonic()
        if not self.first_s:
            self.first_s = self.last_s

    def roll(self) -> None:
        now = time.monotonic()
        marks = self._marks
        marks.append((now, self.messages, self.bytes, self.last_s))
        while len(marks) > 2 and marks[1][0] <= now - RATE_WINDOW_S:
            marks.popleft()
        _, messages, nbytes, then_last = marks[0]
        count = self.messages - messages
        span = self.last_s - then_last
        if not then_last:  # the window holds the first message: count the gaps after it
            count, span = count - 1, self.last_s - self.first_s
        if count > 0 and span > 0:
            self.rate_hz, self.bandwidth_bps = count / span, (self.bytes - nbytes) / span
        else:
            self.rate_hz = self.bandwidth_bps = 0.0


class Publisher(Generic[M]):
    """Publishes one message type on one topic. Create with `Node.publisher`."""

    def __init__(
        self, node: Node, topic: str, cls: type[M], latched: bool, depth: int, sock: zmq.Socket
    ) -> None:
        self.topic = topic
        self.cls = cls
        self.latched = latched
        self.depth = depth
        self.stats = _RateWindow()
        self._node = node
        self._sock = sock
        self._codec = Codec(cls)
        self._frame = topic_frame(topic)
        self._seq = 0
        self.subscribers = 0  # current subscriptions, from the XPUB socket's events
        self._last: list[Any] | None = None
        self._stamped = "header" in cls.__struct_fields__

    def publish(self, msg: M) -> None:
        """Send `msg` to every connected subscriber. Never blocks: a subscriber whose
        queue is full loses the message and sees a sequence gap."""
        if type(msg) is not self.cls:
            raise TypeError(
                f"{self.topic} carries {self._codec.type_name}, not {type(msg).__name__}"
            )
        self._seq += 1
        if not self.subscribers and not self.latched:
            return  # nobody listens: ZeroMQ would drop it after we paid for encoding it
        payload, buffers = self._codec.encode(msg)
        self._send(payload, buffers,
                   msg.header.stamp_ns if self._stamped else 0)  # type: ignore[attr-defined]

    def publish_encoded(self, payload: bytes, buffers: Sequence[Any] = (),
                        stamp_ns: int = 0) -> None:
        """Send a payload encoded already as this topic's type (a recording's bytes, as
        they were: a replay is exact). The caller vouches for the type; subscribers still
        check the payload when they decode it."""
        self._seq += 1
        if self.subscribers or self.latched:
            self._send(payload, list(buffers), stamp_ns)

    def _send(self, payload: bytes, buffers: list[Any], stamp: int) -> None:
        node = self._node
        header = HEADER_ENCODER.encode(
            FrameHeader(
                self._codec.type_name,
                self._codec.schema_hash,
                node.uid,
                self._seq,
                stamp or node.clock.now_ns(),
                time.time_ns(),
            )
        )
        # Frame by frame with a plain-int flag: send_multipart spends ~1.5 µs a message
        # combining enum flags, a third of the whole publish.
        sock = self._sock
        sock.send(self._frame, _MORE)
        sock.send(header, _MORE)
        if buffers:
            sock.send(payload, _MORE)
            for buffer in buffers[:-1]:
                sock.send(buffer, _MORE, copy=False)
            sock.send(buffers[-1], 0, copy=False)
        else:
            sock.send(payload, 0)
        self.stats.count_one()
        self.stats.bytes += len(payload) + sum(memoryview(b).nbytes for b in buffers)
        if self.latched:
            self._last = [self._frame, header, payload, *buffers]

    def _resend_latched(self, sock: zmq.Socket) -> None:
        """A subscriber (re)joined: give it the last value. Existing subscribers get it
        too (PUB has no unicast) and drop it as a duplicate sequence number."""
        if self._last is not None:
            sock.send_multipart(self._last, copy=False)

    def info(self) -> p.PublisherInfo:
        return p.PublisherInfo(
            topic=self.topic,
            type_name=self._codec.type_name,
            schema_hash=self._codec.schema_hash,
            latched=self.latched,
            depth=self.depth,
            subscribers=self.subscribers,
            messages=self.stats.messages,
            bytes=self.stats.bytes,
            rate_hz=self.stats.rate_hz,
            bandwidth_bps=self.stats.bandwidth_bps,
        )


class Subscription(Generic[M]):
    """Receives one topic. Create with `Node.subscribe`."""

    def __init__(
        self,
        node: Node,
        topic: str,
        cls: type[M] | None,
        callback: Callable[[M], Any],
        depth: int,
        conflate: bool,
        max_age: float | None,
    ) -> None:
        self.topic = topic
        self.cls = cls
        self.callback = callback
        self.depth = depth
        self.conflate = conflate
        self.max_age = max_age
        self.stats = _RateWindow()
        self.gaps = 0
        self.stale = 0
        self.conflated = 0
        self.rejected = 0
        self.duplicates = 0
        self.latency_s: float | None = None
        self.last_header: FrameHeader | None = None
        self._node = node
        self._codec = Codec(cls) if cls is not None else None
        self._type_name = self._codec.type_name if self._codec else ANY_TYPE
        self._hash = self._codec.schema_hash if self._codec else 0
        self._max_age_ns = None if max_age is None else int(max_age * 1e9)
        self._last_seq: dict[str, int] = {}
        self._connected: dict[str, str] = {}  # publisher uid -> url
        self._vanished: dict[str, float] = {}  # connected uid -> when the registry lost it
        self._refused: set[str] = set()  # publisher uids refused for a type mismatch
        self._static: set[str] = set()  # links made by connect(), kept without the registry
        # Copies are cheaper than zmq.Frame objects for small frames (3 us a message);
        # only typed array messages gain from zero-copy buffers.
        self._copy = self._codec is None or not self._codec.has_arrays
        self.socket = node._context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, depth)
        # No ZMQ_MAXMSGSIZE: over it, ZeroMQ silently drops the connection (and the
        # messages sent until it is back) instead of counting; _deliver checks the size.
        self.socket.setsockopt(zmq.SUBSCRIBE, topic_frame(topic))
        # Sim time (see Node._clock_mark): the last /clock read on this socket, and
        # whether the socket waits for the node's time to catch up with it.
        self.clock_mark_ns: int | None = None
        self.parked = False
        self._in_sim_time = False

    def follow_sim_clock(self) -> None:
        """Receive /clock on this socket too, in order with the topic's messages: a
        publisher of both (the simulator) sends its readings for a step before the step's
        /clock, so once the /clock is read, every reading before it has been."""
        self._in_sim_time = True
        if self.topic != CLOCK_TOPIC:
            self.socket.setsockopt(zmq.SUBSCRIBE, CLOCK_FRAME)

    # -- connections ---------------------------------------------------------------------------

    @property
    def publishers(self) -> int:
        """Publishers this subscription is connected to now."""
        return len(self._connected)

    def connect(self, url: str, publisher: str = "", server_key: str = "") -> None:
        """Connect to a publisher endpoint directly (static wiring without discovery): the
        link stays, whatever the registry says. `server_key`: the publisher's CurveZMQ
        public key (Z85) for tcp with FLEETBUS_KEYS."""
        key = publisher or url
        self._static.add(key)
        self._link(url, key, server_key)

    def _link(self, url: str, key: str, server_key: str) -> None:
        old = self._connected.get(key)
        if old == url:
            return
        if old is not None:  # the publisher now offers a closer endpoint
            self.socket.disconnect(old)
        security.connect(self.socket, url, self._node._keys, server_key)
        self._connected[key] = url

    def update_peers(self, peers: list[p.PeerPublisher], complete: bool) -> None:
        """Follow the registry's list of publishers: connect new ones whose type matches,
        refuse (loudly) those whose type does not, and drop vanished ones when the
        registry's view is complete."""
        node = self._node
        wanted = set()
        for peer in peers:
            if self._codec is not None and peer.schema_hash != self._hash:
                if peer.uid not in self._refused:
                    self._refused.add(peer.uid)
                    node._count(
                        "type_mismatch",
                        f"refusing publisher {peer.node} on {self.topic}: it sends "
                        f"{peer.type_name}#{peer.schema_hash:016x}, this subscription "
                        f"expects {self._type_name}#{self._hash:016x}",
                        level="error",
                    )
                continue
            url = node._pick_url(peer.context, peer.host, peer.urls, peer.curve_key)
            if url is None:
                mismatch = node._curve_mismatch(peer.curve_key)
                node._count(
                    "unreachable",
                    f"no reachable endpoint for publisher {peer.node} on {self.topic} "
                    f"(offers {', '.join(peer.urls)}{'; ' if mismatch else ''}{mismatch})",
                )
                continue
            wanted.add(peer.uid)
            if self._connected.get(peer.uid) != url:
                try:
                    self._link(url, peer.uid, peer.curve_key)
                except zmq.ZMQError as exc:  # a malformed endpoint must not stop the node
                    node._count(
                        "unreachable",
                        f"cannot connect to publisher {peer.node} on {self.topic} at {url} "
                        f"({exc})",
                    )
        if complete:
            now = time.monotonic()
            for uid in wanted:
                self._vanished.pop(uid, None)
            for uid in set(self._connected) - wanted - self._static:
                since = self._vanished.setdefault(uid, now)
                if now - since < VANISHED_LINGER_S:
                    continue  # maybe only busy: a long callback stops its heartbeats too
                del self._vanished[uid]
                try:
                    self.socket.disconnect(self._connected.pop(uid))
                except zmq.ZMQError:
                    pass
                self._last_seq.pop(uid, None)

    # -- receiving --------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._in_sim_time:
            return self._read_to_clock()
        sock = self.socket
        batch = []
        # One readiness check after the first read tells a lone message (most wake-ups)
        # from a burst without pyzmq's costly zmq.Again; in a burst, reading on until Again
        # costs one exception per batch, where a check per message costs about as much as
        # the read itself (4-5 us of 5-10, measured on 1 kB frames).
        try:
            while len(batch) < RECV_BATCH:
                batch.append(sock.recv_multipart(_NOBLOCK, copy=self._copy))
                if len(batch) == 1 and not sock.get(_EVENTS) & _POLLIN:
                    break
        except zmq.Again:
            pass  # woken without a message (another handler drained it)
        self._deliver_batch(batch)

    def _read_to_clock(self) -> None:
        """Deliver the messages up to the next new /clock on the socket, then hand that
        time to the node, which parks the socket until its own time has caught up: the
        messages after it belong to a later step and must not overtake its timers."""
        sock = self.socket
        batch: list[Any] = []
        mark = None
        try:
            while len(batch) < RECV_BATCH:
                frames = sock.recv_multipart(_NOBLOCK, copy=self._copy)
                if len(frames) >= 3 and bytes(frames[0]) == CLOCK_FRAME:
                    stamp = self._node._clock_stamp(frames[2])
                    if stamp is not None and (self.clock_mark_ns is None
                                              or stamp > self.clock_mark_ns):
                        if self.topic == CLOCK_TOPIC:
                            batch.append(frames)
                        mark = stamp
                        break
                    if stamp is not None and stamp < self.clock_mark_ns and (
                            self.topic == CLOCK_TOPIC):  # counted once, not per socket
                        self._node._count("clock_backwards", f"/clock went back to {stamp} "
                                          "ns; ignored")
                    continue  # a latched /clock re-sent to a newcomer, or garbage
                batch.append(frames)
                if len(batch) == 1 and not sock.get(_EVENTS) & _POLLIN:
                    break  # a lone message; in a burst, read on (see _on_readable)
        except zmq.Again:
            pass
        self._deliver_batch(batch)
        if mark is not None:
            self._node._clock_mark(self, mark)

    def _deliver_batch(self, batch: list[Any]) -> None:
        """Deliver what one wake-up read: only the newest when conflating."""
        if self.conflate and len(batch) > 1:
            self.conflated += len(batch) - 1
            for frames in batch[:-1]:
                self._skip(frames)
            batch = batch[-1:]
        for frames in batch:
            self._deliver(frames)

    def _skip(self, frames: list[Any]) -> None:
        """A message replaced by a newer one (conflation) was not lost: account for its
        sequence number, or the next delivery would count it as a gap."""
        try:
            self._in_sequence(HEADER_DECODER.decode(frames[1]))
        except (IndexError, msgspec.MsgspecError):
            pass  # garbage: _deliver would have rejected it too

    def _in_sequence(self, header: FrameHeader) -> bool:
        """Count lost messages from the publisher's sequence numbers; False for a
        duplicate (a latched value re-sent to a late joiner reaches everyone)."""
        last = self._last_seq.get(header.publisher)
        if last is not None:
            if header.seq <= last:
                self.duplicates += 1
                return False
            self.gaps += header.seq - last - 1
        self._last_seq[header.publisher] = header.seq
        return True

    def _deliver(self, frames: list[Any]) -> None:
        node = self._node
        size = sum(map(len, frames))
        self.stats.count_one()
        self.stats.bytes += size
        if len(frames) < 3:
            return self._reject(f"truncated frame ({len(frames)} parts, need 3)")
        if size > node.max_message_bytes:
            return self._reject(f"oversized message ({size} bytes > {node.max_message_bytes})")
        try:
            header = HEADER_DECODER.decode(frames[1])
        except msgspec.MsgspecError as exc:
            return self._reject(f"bad frame header ({exc})")
        if header.schema_hash != self._hash and self._codec is not None:
            return self._reject(
                f"frame of type {header.type_name}#{header.schema_hash:016x} from "
                f"{header.publisher}, expected {self._type_name}"
            )
        if not self._in_sequence(header):
            return None
        max_age = self._max_age_ns
        if max_age is not None and node.clock.now_ns() - header.source_stamp_ns > max_age:
            self.stale += 1
            return None
        if self._codec is None:
            msg: Any = AnyMessage(self.topic, header, bytes(frames[2]), frames[3:])
        else:
            try:
                msg = self._codec.decode(frames[2], frames[3:])
            except DecodeError as exc:
                return self._reject(str(exc))
        self.latency_s = (time.time_ns() - header.publish_wall_ns) * 1e-9
        self.last_header = header
        node._run_callback(self.callback, msg, self.topic)
        return None

    def _reject(self, why: str) -> None:
        self.rejected += 1
        self._node._count("rejected_frame", f"{self.topic}: rejected {why}")

    def info(self) -> p.SubscriptionInfo:
        return p.SubscriptionInfo(
            topic=self.topic,
            type_name=self._type_name,
            schema_hash=self._hash,
            depth=self.depth,
            conflate=self.conflate,
            max_age_s=self.max_age,
            messages=self.stats.messages,
            bytes=self.stats.bytes,
            rate_hz=self.stats.rate_hz,
            # Garbage sequence numbers can push this past what MessagePack encodes, and
            # a failing announce would stop the node's loop.
            gaps=min(self.gaps, 2**63 - 1),
            stale=self.stale,
            conflated=self.conflated,
            rejected=self.rejected,
            latency_s=self.latency_s,
            publishers=self.publishers,
        )
