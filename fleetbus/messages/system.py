"""Clock, health and events, plus simple payload types for tools and demos."""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

from fleetbus.messages.base import Message
from fleetbus.messages.geometry import Header


class Clock(Message):
    """Simulation time, published on /clock by the simulator."""

    __msgtype__ = "fleetbus/Clock"
    stamp_ns: int = 0


class Heartbeat(Message):
    __msgtype__ = "fleetbus/Heartbeat"
    header: Header = msgspec.field(default_factory=Header)
    node: str = ""
    state: Literal["starting", "ok", "warn", "error", "stopping"] = "ok"
    pid: int = 0
    uptime_s: float = 0.0


class Diagnostic(Message):
    __msgtype__ = "fleetbus/Diagnostic"
    header: Header = msgspec.field(default_factory=Header)
    name: str = ""  # what is diagnosed, e.g. "fusion/gnss"
    level: Literal["ok", "warn", "error", "stale"] = "ok"
    message: str = ""
    values: dict[str, str] = {}


class Event(Message):
    """Something that happened: a fault, a geofence breach, a failsafe."""

    __msgtype__ = "fleetbus/Event"
    header: Header = msgspec.field(default_factory=Header)
    source: str = ""  # node or vehicle that reports it
    kind: str = ""  # e.g. "fault", "breach", "failsafe"
    severity: Literal["info", "warn", "error", "critical"] = "info"
    message: str = ""
    data: dict[str, str] = {}


class String(Message):
    __msgtype__ = "fleetbus/String"
    data: str = ""


class Float64(Message):
    __msgtype__ = "fleetbus/Float64"
    data: float = 0.0


class Blob(Message):
    """Opaque bytes, inside the MessagePack payload (for small payloads)."""

    __msgtype__ = "fleetbus/Blob"
    header: Header = msgspec.field(default_factory=Header)
    data: bytes = b""


class ArrayMsg(Message):
    """A numpy array, sent as a separate zero-copy frame (images, point clouds, grids)."""

    __msgtype__ = "fleetbus/ArrayMsg"
    header: Header = msgspec.field(default_factory=Header)
    data: np.ndarray | None = None
