"""Node programs the tests start as separate processes, and the message types they share.

    python -m tests.procs registry [--tcp URL] [--join URL ...] [--endpoints FILE]
    python -m tests.procs talker --topic /x [--count N] [--rate HZ] [--latched] ...
    python -m tests.procs listener --topic /x --out FILE [--type text|number]
    python -m tests.procs server [--name server] [--relay-to SERVICE]

Every program runs until SIGTERM/SIGINT and then shuts down cleanly (exit code 0,
sockets closed, ipc files removed). The bus comes from the FLEETBUS_* environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import numpy as np

import fleetbus
from fleetbus import Message
from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry import Registry

# -- message types (distinct wire names; the standard set is not needed here) -------------


class Text(Message):
    __msgtype__ = "test/Text"
    data: str = ""
    n: int = 0


class Number(Message):
    __msgtype__ = "test/Number"
    v: float = 0.0


class AddRequest(Message):
    __msgtype__ = "test/AddRequest"
    a: float = 0.0
    b: float = 0.0


class StampHeader(Message):
    __msgtype__ = "test/Header"
    stamp_ns: int = 0
    frame_id: str = ""


class Stamped(Message):
    """A message with a header: its stamp is what max_age is measured against."""

    __msgtype__ = "test/Stamped"
    header: StampHeader
    n: int = 0


class Blob(Message):
    """A message with an out-of-band numpy array (exercises the buffer frames)."""

    __msgtype__ = "test/Blob"
    array: np.ndarray
    name: str = ""
    values: list[int] = []


TYPES: dict[str, type[Message]] = {"text": Text, "number": Number}


# -- programs -------------------------------------------------------------------------------


class Talker(fleetbus.Node):
    """Publishes Text(n=0, 1, ...) on `topic` at `rate` Hz; with `wait_subscribers`, only
    once that many subscriptions are connected (so nothing is sent into the void)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.name)
        self.args = args
        self.n = 0

    def setup(self) -> None:
        a = self.args
        self.pub = self.publisher(a.topic, TYPES[a.type], latched=a.latched)
        if a.type == "number":
            self.make = lambda n: Number(v=float(n))
        else:
            self.make = lambda n: Text(data=f"{a.prefix}{n}", n=n)
        if a.latched and a.count:  # a latched value exists before anyone subscribes
            self.pub.publish(self.make(0))
            self.n = 1
        self.timer(1.0 / a.rate, self.tick)

    def tick(self) -> None:
        if self.pub.subscribers < self.args.wait_subscribers:
            return
        if self.args.count and self.n >= self.args.count:
            return  # done; keep running so queued messages are not lost on close
        self.pub.publish(self.make(self.n))
        self.n += 1


class Listener(fleetbus.Node):
    """Writes one JSON line per received message to `out` (flushed at once)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.name)
        self.args = args

    def setup(self) -> None:
        self.out = open(self.args.out, "a", buffering=1)  # noqa: SIM115 (closed in teardown)
        self.sub = self.subscribe(self.args.topic, TYPES[self.args.type], self.on_msg)

    def on_msg(self, msg: Any) -> None:
        header = self.sub.last_header
        row = {
            "n": getattr(msg, "n", None) if not isinstance(msg, Number) else int(msg.v),
            "data": getattr(msg, "data", None),
            "seq": header.seq if header else None,
            "gaps": self.sub.gaps,
            "duplicates": self.sub.duplicates,
            "urls": sorted(self.sub._connected.values()),
        }
        self.out.write(json.dumps(row) + "\n")

    def teardown(self) -> None:
        self.out.close()


class Server(fleetbus.Node):
    """Services `~/add`, `~/sleep` (sleeps v seconds), `~/fail` (raises), `~/relay`
    (calls --relay-to with the same request); parameters `gain` (float, refuses < 0)
    and `mode` (str)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.name)
        self.args = args

    def setup(self) -> None:
        self.service("~/add", AddRequest, Number, lambda r: Number(v=r.a + r.b))
        self.service("~/sleep", Number, Number, self.sleep)
        self.service("~/fail", Number, Number, self.fail)
        self.service("~/relay", Number, Number, self.relay)
        self.gain = self.param("gain", 1.0, "a gain", on_change=self.check_gain)
        self.mode = self.param("mode", "auto", "operating mode")

    def sleep(self, req: Number) -> Number:
        time.sleep(req.v)
        return Number(v=req.v)

    def fail(self, req: Number) -> Number:
        raise ValueError(f"boom {req.v:g}")

    def relay(self, req: Number) -> Number:
        answer = self.call(self.args.relay_to, Number(v=req.v + 1), timeout=5.0)
        return Number(v=answer.v + 1)

    def check_gain(self, value: float) -> None:
        if value < 0:
            raise ValueError("gain must not be negative")


def serve_registry(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    registry = Registry(BusConfig.from_env(), tcp=args.tcp, join=args.join)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: registry._stop.set())
    if args.endpoints:
        with open(args.endpoints + ".tmp", "w") as f:
            json.dump(registry.endpoints, f)
        os.replace(args.endpoints + ".tmp", args.endpoints)
    registry.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.procs")
    sub = parser.add_subparsers(dest="program", required=True)
    reg = sub.add_parser("registry")
    reg.add_argument("--tcp")
    reg.add_argument("--join", action="append", default=[])
    reg.add_argument("--endpoints", help="write the bound endpoints (JSON list) here")
    talk = sub.add_parser("talker")
    talk.add_argument("--name", default="talker")
    talk.add_argument("--topic", default="/chatter")
    talk.add_argument("--type", choices=sorted(TYPES), default="text")
    talk.add_argument("--count", type=int, default=0, help="0: forever")
    talk.add_argument("--rate", type=float, default=100.0)
    talk.add_argument("--latched", action="store_true")
    talk.add_argument("--wait-subscribers", type=int, default=0)
    talk.add_argument("--prefix", default="msg ")
    listen = sub.add_parser("listener")
    listen.add_argument("--name", default="listener")
    listen.add_argument("--topic", default="/chatter")
    listen.add_argument("--type", choices=sorted(TYPES), default="text")
    listen.add_argument("--out", required=True)
    server = sub.add_parser("server")
    server.add_argument("--name", default="server")
    server.add_argument("--relay-to", default="/client/echo")
    args = parser.parse_args(argv)
    if args.program == "registry":
        serve_registry(args)
        return
    node = {"talker": Talker, "listener": Listener, "server": Server}[args.program](args)
    fleetbus.run(node)
    sys.exit(1 if node.setup_error is not None else 0)


if __name__ == "__main__":
    main()
