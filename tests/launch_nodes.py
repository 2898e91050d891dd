"""Node classes that launch tests start through graph files."""

from __future__ import annotations

import os
import time

import fleetbus
from fleetbus.messages import Float64, String


class Ticker(fleetbus.Node):
    """Publishes /<ns>/tick (Float64) at 20 Hz; `setup_delay` slows its start-up."""

    def setup(self) -> None:
        delay = self.param("setup_delay", 0.0)
        self.param("vehicle_id", "")
        time.sleep(delay.value)
        pub = self.publisher("tick", Float64)
        self.timer(0.05, lambda: pub.publish(Float64(data=self.now())))


class TextSink(fleetbus.Node):
    """Subscribes to /<ns>/tick with the wrong type (String): a static type mismatch."""

    def setup(self) -> None:
        self.subscribe("tick", String, lambda m: None)


class Crashy(fleetbus.Node):
    def setup(self) -> None:
        raise RuntimeError("this node cannot start")


class Quitter(fleetbus.Node):
    """Exits the whole process with status 1 shortly after starting."""

    def setup(self) -> None:
        self.timer(0.2, lambda: os._exit(1))


class Freezer(fleetbus.Node):
    """Registers, then blocks its loop for good: heartbeats stop, the process lives."""

    def setup(self) -> None:
        self.timer(0.5, lambda: time.sleep(3600))


class Latch(fleetbus.Node):
    """Publishes its `value` once, latched, on /config."""

    def setup(self) -> None:
        self.publisher("/config", String, latched=True).publish(
            String(data=str(self.param("value", "v1").value)))


class Relay(fleetbus.Node):
    """Once it has the latched /config, publishes "<config> <n>" on /relayed at 20 Hz."""

    def setup(self) -> None:
        self.value: str | None = None
        self.n = 0
        self.subscribe("/config", String, self._on_config)
        self.out = self.publisher("/relayed", String)
        self.timer(0.05, self._tick)

    def _on_config(self, msg: String) -> None:
        self.value = msg.data

    def _tick(self) -> None:
        if self.value is not None:
            self.out.publish(String(data=f"{self.value} {self.n}"))
            self.n += 1
