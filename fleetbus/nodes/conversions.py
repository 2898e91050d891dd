"""Between bus messages and the algorithm packages' types: geofences, estimates and
commands.

The algorithm packages never import the bus, so the translation lives here, once, for
every node that needs it."""

from __future__ import annotations

import math

import numpy as np

from fleetbus.estimation import Estimate
from fleetbus.messages import (
    CarCommand,
    GeofenceZone,
    Header,
    Odometry,
    QuadrotorCommand,
    ShipCommand,
    Vector3,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.planners import Geofence, GeofenceError, Zone


def fence_from_msg(msg: GeofenceMsg) -> Geofence:
    """A Geofence from its message; GeofenceError names the first bad zone."""
    zones = []
    for k, z in enumerate(msg.zones):
        attributes = {"inclusion": z.inclusion, "floor_m": z.floor_m, "ceiling_m": z.ceiling_m,
                      "action": z.action, "priority": z.priority}
        zone_id = z.zone_id or f"zone {k}"
        if z.kind == "circle":
            zones.append(Zone.circle_zone(zone_id, (z.center.x, z.center.y), z.radius_m,
                                          **attributes))
        else:
            zones.append(Zone.polygon(zone_id, [(v.x, v.y) for v in z.vertices],
                                      [[(v.x, v.y) for v in hole] for hole in z.holes],
                                      **attributes))
    if not zones:
        raise GeofenceError("the geofence message has no zones")
    return Geofence(zones, (msg.origin_lat_deg, msg.origin_lon_deg, msg.origin_alt_m))


def fence_to_msg(fence: Geofence) -> GeofenceMsg:
    zones = []
    for z in fence.zones:
        common = {"zone_id": z.zone_id, "inclusion": z.inclusion, "floor_m": z.floor_m,
                  "ceiling_m": z.ceiling_m, "action": z.action, "priority": z.priority}
        if z.circle is not None:
            cx, cy, r = z.circle
            zones.append(GeofenceZone(kind="circle", center=Vector3(x=cx, y=cy), radius_m=r,
                                      **common))
        else:
            zones.append(GeofenceZone(
                kind="polygon", vertices=_ring(z.shape.exterior.coords),
                holes=[_ring(h.coords) for h in z.shape.interiors], **common))
    lat, lon, alt = fence.origin or (0.0, 0.0, 0.0)
    return GeofenceMsg(origin_lat_deg=lat, origin_lon_deg=lon, origin_alt_m=alt, zones=zones)


def _ring(coords) -> list[Vector3]:
    return [Vector3(x=float(x), y=float(y)) for x, y in list(coords)[:-1]]


def estimate_from_odometry(msg: Odometry) -> Estimate:
    p, q = msg.pose.position, msg.pose.orientation
    v, w = msg.twist.linear, msg.twist.angular
    return Estimate(
        stamp_s=msg.header.stamp_ns * 1e-9,
        position=np.array([p.x, p.y, p.z]),
        orientation=np.array([q.w, q.x, q.y, q.z]),
        velocity_body=np.array([v.x, v.y, v.z]),
        angular_body=np.array([w.x, w.y, w.z]),
        pose_covariance=np.asarray(msg.pose_covariance, float).reshape(6, 6),
        twist_covariance=np.asarray(msg.twist_covariance, float).reshape(6, 6))


def is_finite(estimate: Estimate) -> bool:
    return all(math.isfinite(float(x)) for x in (*estimate.position, *estimate.orientation,
                                                  *estimate.velocity_body))


COMMANDS = {"quadrotor": QuadrotorCommand, "vessel": ShipCommand, "car": CarCommand}
Command = QuadrotorCommand | ShipCommand | CarCommand


def command_vector(msg: Command) -> list[float]:
    """A command message as the model's input vector (the order of `input_bounds`)."""
    if isinstance(msg, QuadrotorCommand):
        return [msg.thrust_n, msg.body_rates.x, msg.body_rates.y, msg.body_rates.z]
    if isinstance(msg, ShipCommand):
        return [msg.surge_force_n, msg.yaw_moment_nm]
    return [msg.acceleration_mps2, msg.steering_rad]


def command_message(kind: str, u: np.ndarray, stamp_ns: int) -> Command:
    """The inverse of command_vector for a vehicle type."""
    header = Header(stamp_ns=stamp_ns)
    u = [float(x) for x in u]
    if kind == "quadrotor":
        return QuadrotorCommand(header=header, thrust_n=u[0],
                                body_rates=Vector3(x=u[1], y=u[2], z=u[3]))
    if kind == "vessel":
        return ShipCommand(header=header, surge_force_n=u[0], yaw_moment_nm=u[1])
    return CarCommand(header=header, acceleration_mps2=u[0], steering_rad=u[1])
