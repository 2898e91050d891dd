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
