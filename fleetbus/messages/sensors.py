"""Sensor readings. Covariances are row-major; an all-zero covariance means unknown."""

from __future__ import annotations

import msgspec

from fleetbus.messages.base import Message
from fleetbus.messages.geometry import Header, Quaternion, Vector3


def _zeros9() -> list[float]:
    return [0.0] * 9


class Imu(Message):
    """Inertial measurement in the body frame (FLU)."""

    __msgtype__ = "fleetbus/Imu"
    header: Header = msgspec.field(default_factory=Header)
    angular_velocity: Vector3 = msgspec.field(default_factory=Vector3)  # rad/s, body FLU
    linear_acceleration: Vector3 = msgspec.field(default_factory=Vector3)
    """Specific force, m/s², body FLU (at rest and level: z = +9.81)."""
    orientation: Quaternion | None = None  # body → ENU, when the IMU estimates attitude
    angular_velocity_covariance: list[float] = msgspec.field(default_factory=_zeros9)
    """3x3 row-major, (rad/s)²."""
    linear_acceleration_covariance: list[float] = msgspec.field(default_factory=_zeros9)
    """3x3 row-major, (m/s²)²."""


class GnssFix(Message):
    """A satellite navigation fix, WGS84."""

    __msgtype__ = "fleetbus/GnssFix"
    header: Header = msgspec.field(default_factory=Header)
    latitude_deg: float = 0.0  # WGS84, degrees, north positive
    longitude_deg: float = 0.0  # WGS84, degrees, east positive
    altitude_m: float = 0.0  # above mean sea level (MSL), not the ellipsoid, m
    fix_type: int = 0  # 0 none, 2 = 2-D, 3 = 3-D
    satellites: int = 0  # satellites used in the fix
    position_covariance: list[float] = msgspec.field(default_factory=_zeros9)  # ENU, m²
    velocity_enu: Vector3 | None = None  # m/s, when the receiver reports it


class Heading(Message):
    """Compass or dual-antenna heading. ENU yaw: 0 = east, counter-clockwise positive."""

    __msgtype__ = "fleetbus/Heading"
    header: Header = msgspec.field(default_factory=Header)
    yaw_rad: float = 0.0  # rad, ENU (0 = east, counter-clockwise positive)
    variance: float = 0.0  # rad²


class WheelSpeed(Message):
    """Ground vehicle speed from wheel odometry, along the body x axis."""

    __msgtype__ = "fleetbus/WheelSpeed"
    header: Header = msgspec.field(default_factory=Header)
    speed_mps: float = 0.0  # m/s, body x (forward); negative when reversing
    variance: float = 0.0  # (m/s)²


class SpeedLog(Message):
    """Vessel speed through water (Doppler or paddle log), body frame."""

    __msgtype__ = "fleetbus/SpeedLog"
    header: Header = msgspec.field(default_factory=Header)
    surge_mps: float = 0.0  # m/s, body x (forward)
    sway_mps: float = 0.0  # m/s, body y (to port, left)
    variance: float = 0.0  # (m/s)²


class BaroAltitude(Message):
    """Barometric altitude above the local origin."""

    __msgtype__ = "fleetbus/BaroAltitude"
    header: Header = msgspec.field(default_factory=Header)
    altitude_m: float = 0.0  # m, up (ENU z) from the local origin
    variance: float = 0.0  # m²
