"""Geometry primitives. Local frame ENU (x east, y north, z up), body frame FLU."""

from __future__ import annotations

import msgspec

from fleetbus.messages.base import Message


class Header(Message):
    """Stamp and frame of a measurement or command."""

    __msgtype__ = "fleetbus/Header"
    stamp_ns: int = 0  # bus time of the data (sim time in sim mode), ns
    frame_id: str = ""  # frame the data is expressed in, e.g. "map", "base_link"


class Vector3(Message):
    __msgtype__ = "fleetbus/Vector3"
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


class Quaternion(Message):
    """Rotation as a unit quaternion, scalar first (w, x, y, z)."""

    __msgtype__ = "fleetbus/Quaternion"
    w: float = 1.0
    x: float = 0.0
    y: float = 0.0
    z: float = 0.0


class Pose(Message):
    __msgtype__ = "fleetbus/Pose"
    position: Vector3 = msgspec.field(default_factory=Vector3)  # m
    orientation: Quaternion = msgspec.field(default_factory=Quaternion)  # body → frame


class Twist(Message):
    __msgtype__ = "fleetbus/Twist"
    linear: Vector3 = msgspec.field(default_factory=Vector3)  # m/s
    angular: Vector3 = msgspec.field(default_factory=Vector3)  # rad/s
