"""Benchmark peer processes: each role exists as a fleetbus node and as the raw floor
(plain pyzmq XPUB/SUB over the same ipc transport, the same msgspec payload, the same
pacing), so the ratio between the two is what fleetbus itself costs.

    python -m benchmarks.peers ROLE --impl fleetbus|raw --topic T --count N ...

Sinks write one row per message, ``[send stamp, receive time]`` in wall-clock int64
nanoseconds, to `--out` as .npy; the pinger writes round-trip times.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import zmq

import fleetbus
from fleetbus.messages import ArrayMsg, Blob, Header, Odometry

IDLE_S = 2.0  # a sink stops this long after its last message (some may have been dropped)


# -- what is sent ----------------------------------------------------------------------------


def make_message(kind: str, size: int) -> fleetbus.Message:
    if kind == "blob":
        return Blob(data=bytes(size))
    if kind == "array":
        return ArrayMsg(data=np.zeros(size // 8, dtype=np.float64))
    return Odometry(child_frame_id="base_link", pose_covariance=[0.1] * 36,
                    twist_covariance=[0.2] * 36)


TYPES = {"blob": Blob, "array": ArrayMsg, "odometry": Odometry}


def stamped(msg: fleetbus.Message) -> fleetbus.Message:
    """The message with a fresh send stamp (wall clock: the receiver is on this host)."""
    msg.header = Header(stamp_ns=time.time_ns())  # type: ignore[attr-defined]
    return msg


def pace(count: int, rate: float, send: Callable[[int], None]) -> None:
    """Call `send(i)` `count` times at `rate` Hz (0 = as fast as possible). Sleeps until
    just before each deadline and spins the rest, the same for both implementations."""
    period = 1.0 / rate if rate else 0.0
    deadline = time.perf_counter()
    for i in range(count):
        if period:
            deadline += period
            while (left := deadline - time.perf_counter()) > 0:
                if left > 0.0005:
                    time.sleep(left - 0.0004)
        send(i)


# -- raw floor ---------------------------------------------------------------------------


class RawPeer:
    """pyzmq sockets with fleetbus's topic framing but none of its machinery."""

    def __init__(self, run_dir: Path) -> None:
        self.ctx = zmq.Context()
        self.run_dir = run_dir

    def url(self, topic: str) -> str:
        return f"ipc://{self.run_dir}/raw{topic.replace('/', '_')}"

    def publisher(self, topic: str, subscribers: int) -> zmq.Socket:
        sock = self.ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # one event per subscriber, as fleetbus counts
        sock.setsockopt(zmq.RCVTIMEO, 60_000)  # a peer that never comes: fail, don't hang
        sock.bind(self.url(topic))
        for _ in range(subscribers):  # the same wait-for-subscribers as fleetbus does
            sock.recv()
        return sock

    def subscriber(self, topic: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, 1000)
        sock.connect(self.url(topic))
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode() + b"\0")
        return sock


def raw_send(sock: zmq.Socket, topic: bytes, msg: fleetbus.Message, enc: msgspec.msgpack.Encoder,
             array: bool) -> None:
    if array:  # header frame + the array's buffer, zero-copy
        data = msg.data  # type: ignore[attr-defined]
        msg.data = None  # type: ignore[attr-defined]
        sock.send_multipart([topic, enc.encode(msg), data], copy=False)
        msg.data = data  # type: ignore[attr-defined]
    else:
        sock.send_multipart([topic, enc.encode(msg)])


# -- roles -----------------------------------------------------------------------------------


def run_source(args: argparse.Namespace) -> None:
    msg = make_message(args.kind, args.size)
    topic = args.topic
    if args.impl == "raw":
        peer = RawPeer(args.run_dir)
        sock = peer.publisher(topic, args.subscribers)
        enc = msgspec.msgpack.Encoder()
        frame = topic.encode() + b"\0"
        pace(args.count, args.rate,
             lambda _: raw_send(sock, frame, stamped(msg), enc, args.kind == "array"))
        time.sleep(0.5)  # let ZeroMQ flush before the process exits
        return

    class Source(fleetbus.Node):
        def setup(self) -> None:
            self.pub = self.publisher(topic, TYPES[args.kind])

    node = Source("source")
    with fleetbus.start(node):
        pub = node.pub
        while pub.subscribers < args.subscribers:
            time.sleep(0.01)
        # Publish from the node's own thread, as a node's timer or callback would.
        node.call_soon_threadsafe(
            lambda: pace(args.count, args.rate, lambda _: pub.publish(stamped(msg)))
        ).result()
        time.sleep(0.5)


def run_sink(args: argparse.Namespace) -> None:
    """Record (send stamp, receive time) for each message."""
    out: list[tuple[int, int]] = []
    cls = TYPES[args.kind]

    cpu: list[float] = []

    def record(msg: fleetbus.Message) -> None:
        out.append((msg.header.stamp_ns, time.time_ns()))  # type: ignore[attr-defined]
        if len(out) in (args.count // 10, args.count * 9 // 10):
            cpu.append(time.process_time())  # steady state only: not start-up or idle end

    if args.impl == "raw":
        sock = RawPeer(args.run_dir).subscriber(args.topic)
        dec = msgspec.msgpack.Decoder(cls)
        _ready(args)
        while len(out) < args.count and sock.poll(int((IDLE_S if out else 30) * 1000)):
            frames = sock.recv_multipart(copy=args.kind != "array")
            msg = dec.decode(frames[1])
            if args.kind == "array":
                msg.data = np.frombuffer(frames[2], dtype=np.float64)
            record(msg)
    else:
        class Sink(fleetbus.Node):
            def setup(self) -> None:
                self.last = time.monotonic()
                self.subscribe(args.topic, cls, self.on_msg)
                self.timer(0.2, self.check_idle)

            def on_msg(self, msg: fleetbus.Message) -> None:
                record(msg)
                self.last = time.monotonic()
                if len(out) >= args.count:
                    self.stop()

            def check_idle(self) -> None:
                if out and time.monotonic() - self.last > IDLE_S:
                    self.stop()

        node = Sink(f"sink{args.index}")
        with fleetbus.start(node):
            _ready(args)  # the source waits until it sees this subscription connected
            node.stopped.wait()
    np.save(args.out, np.asarray(out, dtype=np.int64).reshape(-1, 2))
    if os.environ.get("FLEETBUS_BENCH_CPU") and len(cpu) == 2:
        per = (cpu[1] - cpu[0]) / (args.count * 8 // 10) * 1e6
        print(f"{args.impl} sink CPU per message: {per:.1f} µs")


def run_echo(args: argparse.Namespace) -> None:
    """Republish every /ping on /pong."""
    cls = TYPES[args.kind]
    if args.impl == "raw":
        peer = RawPeer(args.run_dir)
        sub = peer.subscriber("/ping")
        pub = peer.publisher("/pong", 1)
        try:
            while sub.poll(int(IDLE_S * 1000)):
                frames = sub.recv_multipart()
                pub.send_multipart([b"/pong\0", frames[1]])
        except KeyboardInterrupt:
            pass  # the driver's SIGINT: done, like the fleetbus echo
        return

    class Echo(fleetbus.Node):
        def setup(self) -> None:
            self.pub = self.publisher("/pong", cls)
            self.sub = self.subscribe("/ping", cls, self.pub.publish)

    fleetbus.run(Echo("echo"), duration=args.duration)


def run_pinger(args: argparse.Namespace) -> None:
    """Send /ping, wait for its /pong, send the next: round-trip times, one in flight."""
    msg = make_message(args.kind, args.size)
    rtts: list[int] = []
    if args.impl == "raw":
        peer = RawPeer(args.run_dir)
        pong = peer.subscriber("/pong")
        ping = peer.publisher("/ping", 1)
        enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(TYPES[args.kind])
        while len(rtts) < args.count:
            ping.send_multipart([b"/ping\0", enc.encode(stamped(msg))])
            if pong.poll(100):  # a ping sent before the pong link existed is resent
                got = dec.decode(pong.recv_multipart()[1])
                rtts.append(time.time_ns() - got.header.stamp_ns)
    else:
        class Pinger(fleetbus.Node):
            def setup(self) -> None:
                self.pub = self.publisher("/ping", TYPES[args.kind])
                self.sub = self.subscribe("/pong", TYPES[args.kind], self.on_pong)
                self.timer(0.1, self.ping)  # starts, and restarts a ping lost at start-up

            def ping(self) -> None:
                self.pub.publish(stamped(msg))

            def on_pong(self, got: fleetbus.Message) -> None:
                rtts.append(time.time_ns() - got.header.stamp_ns)  # type: ignore[attr-defined]
                if len(rtts) >= args.count:
                    self.stop()
                else:
                    self.ping()

        node = Pinger("pinger")
        with fleetbus.start(node):
            node.stopped.wait()
    np.save(args.out, np.asarray(rtts, dtype=np.int64))


def _ready(args: argparse.Namespace) -> None:
    """Tell the driver this sink is subscribed (it starts the source after all are)."""
    Path(f"{args.out}.ready").touch()


ROLES = {"source": run_source, "sink": run_sink, "echo": run_echo, "pinger": run_pinger}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=sorted(ROLES))
    parser.add_argument("--impl", choices=("fleetbus", "raw"), required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--topic", default="/bench")
    parser.add_argument("--kind", choices=sorted(TYPES), default="blob")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ROLES[args.role](args)


if __name__ == "__main__":
    main()
