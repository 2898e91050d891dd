"""Actuation commands, one per vehicle model."""

from __future__ import annotations

import msgspec

from fleetbus.messages.base import Message
from fleetbus.messages.geometry import Header, Vector3


class QuadrotorCommand(Message):
    """Collective thrust and body rates (the PX4 offboard interface)."""

    __msgtype__ = "fleetbus/QuadrotorCommand"
    header: Header = msgspec.field(default_factory=Header)
    thrust_n: float = 0.0  # collective thrust along body z, N
    body_rates: Vector3 = msgspec.field(default_factory=Vector3)  # rad/s, FLU


class ShipCommand(Message):
    """Generalised forces on a surface vessel (3-DOF model; no direct sway force)."""

    __msgtype__ = "fleetbus/ShipCommand"
    header: Header = msgspec.field(default_factory=Header)
    surge_force_n: float = 0.0  # along body x, N
    yaw_moment_nm: float = 0.0  # about body z (counter-clockwise positive), N·m


class CarCommand(Message):
    """Longitudinal acceleration and front-wheel steering (kinematic bicycle)."""

    __msgtype__ = "fleetbus/CarCommand"
    header: Header = msgspec.field(default_factory=Header)
    acceleration_mps2: float = 0.0  # along the path, m/s²
    steering_rad: float = 0.0  # front wheel angle, left positive
