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
    """A 3-vector. Unit and frame are those of the field holding it (ENU or body FLU)."""

    __msgtype__ = "fleetbus/Vector3"
    x: float = 0.0  # ENU: east; body FLU: forward
    y: float = 0.0  # ENU: north; body FLU: left
    z: float = 0.0  # up (both frames)


class Quaternion(Message):
    """Rotation as a unit quaternion, scalar first (w, x, y, z)."""

    __msgtype__ = "fleetbus/Quaternion"
    w: float = 1.0  # scalar part (dimensionless; identity by default)
    x: float = 0.0  # vector part
    y: float = 0.0
    z: float = 0.0


class Pose(Message):
    """Position and attitude of a body (FLU) in a parent frame (ENU unless stated)."""

    __msgtype__ = "fleetbus/Pose"
    position: Vector3 = msgspec.field(default_factory=Vector3)  # m, parent frame
    orientation: Quaternion = msgspec.field(default_factory=Quaternion)  # body → parent


class Twist(Message):
    """Linear and angular velocity; the holding message states the frame of each."""

    __msgtype__ = "fleetbus/Twist"
    linear: Vector3 = msgspec.field(default_factory=Vector3)  # m/s
    angular: Vector3 = msgspec.field(default_factory=Vector3)  # rad/s
