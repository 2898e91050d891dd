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
    stamp_ns: int = 0  # simulation time, ns since the simulation started


class Heartbeat(Message):
    """Periodic liveness and coarse health of one node."""

    __msgtype__ = "fleetbus/Heartbeat"
    header: Header = msgspec.field(default_factory=Header)
    node: str = ""  # node name
    state: Literal["starting", "ok", "warn", "error", "stopping"] = "ok"
    pid: int = 0  # operating-system process id
    uptime_s: float = 0.0  # s since the node started (wall clock)


class Diagnostic(Message):
    """Health of one component, with key/value details."""

    __msgtype__ = "fleetbus/Diagnostic"
    header: Header = msgspec.field(default_factory=Header)
    name: str = ""  # what is diagnosed, e.g. "fusion/gnss"
    level: Literal["ok", "warn", "error", "stale"] = "ok"
    message: str = ""  # human-readable summary
    values: dict[str, str] = {}  # details, values as text with units in the key


class Event(Message):
    """Something that happened: a fault, a geofence breach, a failsafe."""

    __msgtype__ = "fleetbus/Event"
    header: Header = msgspec.field(default_factory=Header)
    source: str = ""  # node or vehicle that reports it
    kind: str = ""  # e.g. "fault", "breach", "failsafe"
    severity: Literal["info", "warn", "error", "critical"] = "info"
    message: str = ""  # human-readable description
    data: dict[str, str] = {}  # details, e.g. {"zone_id": "harbour"}


class String(Message):
    """A text payload (demos, tools)."""

    __msgtype__ = "fleetbus/String"
    data: str = ""  # UTF-8 text


class Float64(Message):
    """A single number (demos, tools); its unit is the topic's."""

    __msgtype__ = "fleetbus/Float64"
    data: float = 0.0  # unit given by the topic


class Blob(Message):
    """Opaque bytes, inside the MessagePack payload (for small payloads)."""

    __msgtype__ = "fleetbus/Blob"
    header: Header = msgspec.field(default_factory=Header)
    data: bytes = b""  # opaque, application defined


class ArrayMsg(Message):
    """A numpy array, sent as a separate zero-copy frame (images, point clouds, grids)."""

    __msgtype__ = "fleetbus/ArrayMsg"
    header: Header = msgspec.field(default_factory=Header)
    data: np.ndarray | None = None  # any shape and non-object dtype; units per topic
