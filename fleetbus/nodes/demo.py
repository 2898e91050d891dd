"""The three nodes of the bus demo: talker → echo → listener, measuring the latency of
the whole chain (two hops, three processes) on the publisher's own stamps."""

from __future__ import annotations

import numpy as np

from fleetbus.bus.node import Node
from fleetbus.messages import Blob, Diagnostic, Header


class Talker(Node):
    """Publishes `chatter` (Blob of `size` bytes) at `rate_hz`, stamped with the bus time."""

    def setup(self) -> None:
        rate = self.param("rate_hz", 200.0, "publish rate")
        size = self.param("size", 1000, "payload bytes")
        self.pub = self.publisher("chatter", Blob)
        self.payload = bytes(size.value)
        self.timer(1.0 / rate.value, self.tick)

    def tick(self) -> None:
        self.pub.publish(Blob(header=Header(stamp_ns=self.now_ns()), data=self.payload))


class Echo(Node):
    """Republishes every `chatter` message on `echo`, keeping its stamp."""

    def setup(self) -> None:
        self.pub = self.publisher("echo", Blob)
        self.subscribe("chatter", Blob, self.pub.publish)


class Listener(Node):
    """Receives `echo` and publishes latency statistics on `latency` twice a second."""

    def setup(self) -> None:
        self.samples: list[int] = []
        self.received = 0
        self.sub = self.subscribe("echo", Blob, self.on_echo)
        self.pub = self.publisher("latency", Diagnostic)
        self.timer(0.5, self.report)

    def on_echo(self, msg: Blob) -> None:
        self.received += 1
        self.samples.append(self.now_ns() - msg.header.stamp_ns)

    def report(self) -> None:
        values = {"received": str(self.received), "gaps": str(self.sub.gaps)}
        if self.samples:
            us = np.asarray(self.samples) / 1e3
            values |= {
                "p50_us": f"{np.percentile(us, 50):.0f}",
                "p99_us": f"{np.percentile(us, 99):.0f}",
                "max_us": f"{us.max():.0f}",
            }
        self.samples.clear()
        self.pub.publish(
            Diagnostic(
                header=Header(stamp_ns=self.now_ns()),
                name="chain latency talker→echo→listener",
                level="ok",
                values=values,
            )
        )
