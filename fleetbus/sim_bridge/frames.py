"""fleetbus's frames (world ENU, body FLU) against the autopilots' (world NED, body FRD):
every adapter converts here and nowhere else.

Plain float tuples, not numpy: the lockstep adapters convert several vectors per physics
step and small numpy arrays would cost more than the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pymap3d

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]  # w, x, y, z
Origin = tuple[float, float, float]  # WGS84 latitude and longitude (deg), altitude (m MSL)

_HALF_SQRT2 = math.sqrt(0.5)


def enu_ned(v: Sequence[float]) -> Vec3:
    """A world vector from ENU to NED, or back: the map is its own inverse."""
    return (v[1], v[0], -v[2])


def flu_frd(v: Sequence[float]) -> Vec3:
    """A body vector (or body rates) from FLU to FRD, or back: its own inverse too."""
    return (v[0], -v[1], -v[2])


def quat_multiply(a: Sequence[float], b: Sequence[float]) -> Quat:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return (aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw)


# The NED frame seen from ENU: a half turn about the bisector of east and north; the FRD
# body seen from FLU: a half turn about forward.
_NED_FROM_ENU: Quat = (0.0, _HALF_SQRT2, _HALF_SQRT2, 0.0)
_FLU_FROM_FRD: Quat = (0.0, 1.0, 0.0, 0.0)


def attitude_enu_ned(q: Sequence[float]) -> Quat:
    """A body->world attitude (w, x, y, z) from FLU->ENU to FRD->NED, or back (both frame
    changes are half turns, so the map is its own inverse), with a non-negative scalar
    part: the same rotation as its negative, in the form receivers compare against."""
    w, x, y, z = quat_multiply(quat_multiply(_NED_FROM_ENU, q), _FLU_FROM_FRD)
    return (w, x, y, z) if w >= 0 else (-w, -x, -y, -z)


def rotate(q: Sequence[float], v: Sequence[float]) -> Vec3:
    """v rotated by the unit quaternion q (body -> world for an attitude)."""
    w, x, y, z = q
    vx, vy, vz = v
    # t = 2 q_vec x v; v' = v + w t + q_vec x t
    tx, ty, tz = 2 * (y * vz - z * vy), 2 * (z * vx - x * vz), 2 * (x * vy - y * vx)
    return (vx + w * tx + y * tz - z * ty,
            vy + w * ty + z * tx - x * tz,
            vz + w * tz + x * ty - y * tx)


def rotate_inverse(q: Sequence[float], v: Sequence[float]) -> Vec3:
    """v rotated by the conjugate of q (world -> body for an attitude)."""
    return rotate((q[0], -q[1], -q[2], -q[3]), v)


def euler_ned(q: Sequence[float]) -> Vec3:
    """(roll, pitch, yaw) in rad of an FRD->NED attitude, aerospace Z-Y-X order; yaw is the
    heading from north, clockwise."""
    w, x, y, z = q
    roll = math.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = math.asin(max(-1.0, min(1.0, 2 * (w * y - z * x))))
    yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return roll, pitch, yaw


def yaw_quaternion_enu(yaw: float) -> Quat:
    """The FLU->ENU attitude of a level vehicle heading `yaw` (rad, from east,
    counter-clockwise): the cars' and ships' attitude."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def geodetic(enu: Sequence[float], origin: Origin) -> Origin:
    """(lat deg, lon deg, alt m MSL) of a local ENU point around `origin`; an MSL origin
    altitude gives MSL altitudes (the geoid is flat enough over a local frame)."""
    lat, lon, alt = pymap3d.enu2geodetic(float(enu[0]), float(enu[1]), float(enu[2]), *origin)
    return float(lat), float(lon), float(alt)
