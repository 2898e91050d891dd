"""State estimates, paths, missions and geofences (local ENU frame, metres)."""

from __future__ import annotations

from typing import Literal

import msgspec

from fleetbus.messages.base import Message
from fleetbus.messages.geometry import Header, Pose, Twist, Vector3


def _zeros36() -> list[float]:
    return [0.0] * 36


class Odometry(Message):
    """A state estimate: pose in `header.frame_id`, twist in `child_frame_id` (body)."""

    __msgtype__ = "fleetbus/Odometry"
    header: Header = msgspec.field(default_factory=Header)
    child_frame_id: str = ""  # body frame of the twist, e.g. "base_link"
    pose: Pose = msgspec.field(default_factory=Pose)  # m and body → ENU, header.frame_id
    twist: Twist = msgspec.field(default_factory=Twist)  # m/s and rad/s, body FLU
    pose_covariance: list[float] = msgspec.field(default_factory=_zeros36)
    """6x6 row-major over x, y, z (m), roll, pitch, yaw (rad)."""
    twist_covariance: list[float] = msgspec.field(default_factory=_zeros36)
    """6x6 row-major over vx, vy, vz (m/s), wx, wy, wz (rad/s)."""


class Waypoint(Message):
    """A point to reach in the local ENU frame, with how to approach it."""

    __msgtype__ = "fleetbus/Waypoint"
    position: Vector3 = msgspec.field(default_factory=Vector3)  # ENU, m
    speed_mps: float = 0.0  # m/s on the way there (0 = vehicle default)
    acceptance_radius_m: float = 1.0  # m: reached when this close
    hold_s: float = 0.0  # s to wait once reached
    yaw_rad: float | None = None  # rad, ENU heading at the waypoint, if any


class Path(Message):
    """A planned path with a speed for each pose."""

    __msgtype__ = "fleetbus/Path"
    header: Header = msgspec.field(default_factory=Header)
    poses: list[Pose] = []  # in header.frame_id (ENU), m
    speeds_mps: list[float] = []  # m/s, one per pose


class Mission(Message):
    """An ordered list of waypoints for one vehicle."""

    __msgtype__ = "fleetbus/Mission"
    header: Header = msgspec.field(default_factory=Header)
    mission_id: str = ""  # unique per mission, echoed in progress events
    vehicle_id: str = ""  # vehicle that flies/sails/drives it
    waypoints: list[Waypoint] = []
    return_home: bool = False  # fly/sail/drive back to the start when done


class GeofenceZone(Message):
    """One zone: a polygon (with holes) or a circle, with its own altitude band."""

    __msgtype__ = "fleetbus/GeofenceZone"
    zone_id: str = ""  # unique within the geofence
    kind: Literal["polygon", "circle"] = "polygon"
    inclusion: bool = True  # True: stay inside; False: keep out
    vertices: list[Vector3] = []  # polygon outline, ENU m (z ignored)
    holes: list[list[Vector3]] = []  # polygon holes, each an outline, ENU m (z ignored)
    center: Vector3 = msgspec.field(default_factory=Vector3)  # circle centre, ENU m
    radius_m: float = 0.0  # circle radius
    floor_m: float = float("-inf")  # altitude band of the zone, ENU z m (drones only)
    ceiling_m: float = float("inf")  # ENU z m
    action: Literal["report", "hold", "return", "land"] = "report"  # on breach
    priority: int = 0  # higher wins when zones disagree


class Geofence(Message):
    """A set of zones around a WGS84 origin (the local ENU frame's origin)."""

    __msgtype__ = "fleetbus/Geofence"
    header: Header = msgspec.field(default_factory=Header)
    origin_lat_deg: float = 0.0  # WGS84, degrees
    origin_lon_deg: float = 0.0  # WGS84, degrees
    origin_alt_m: float = 0.0  # MSL, m
    zones: list[GeofenceZone] = []


class GeofenceStatus(Message):
    """One vehicle against its geofence, from the geofence guard: where it stands and
    whether a failsafe has taken over its commands."""

    __msgtype__ = "fleetbus/GeofenceStatus"
    header: Header = msgspec.field(default_factory=Header)
    vehicle_id: str = ""
    inside: bool = True  # the estimated position is allowed
    signed_distance_m: float = 0.0  # to the nearest fence boundary, m; negative outside
    margin_m: float = 0.0  # the distance the vehicle needs: radius + stopping + k sigma, m
    time_to_breach_s: float = float("inf")  # at the current velocity, s
    zone_id: str = ""  # the zone breached or about to be, if any
    failsafe: Literal["none", "hold", "return", "land", "recover"] = "none"
    target: Vector3 = msgspec.field(default_factory=Vector3)  # where the failsafe steers, ENU m


class CorridorCell(Message):
    """One convex cell {p : a_x[i] p.x + a_y[i] p.y <= b[i] for all i} (ENU, m) around
    one segment of a path, inside the fence with the vehicle's margin."""

    __msgtype__ = "fleetbus/CorridorCell"
    a_x: list[float] = []  # unit outward normals, x components
    a_y: list[float] = []  # unit outward normals, y components
    b: list[float] = []  # offsets, m
    segment: int = 0  # index of the path segment the cell holds


class Corridor(Message):
    """The convex corridor along a planned path: consecutive cells overlap, so a
    controller can move from one to the next with linear constraints only."""

    __msgtype__ = "fleetbus/Corridor"
    header: Header = msgspec.field(default_factory=Header)
    cells: list[CorridorCell] = []
    floor_m: float = float("-inf")  # altitude band for drones, ENU z m
    ceiling_m: float = float("inf")


class MissionCommand(Message):
    """An operator's order to a vehicle's mission manager, e.g. from a ground station over
    MAVLink: start (or resume) the mission, hold where it is, or return to launch."""

    __msgtype__ = "fleetbus/MissionCommand"
    header: Header = msgspec.field(default_factory=Header)
    vehicle_id: str = ""  # the vehicle ordered
    action: Literal["start", "hold", "resume", "return", "land"] = "hold"
    source: str = ""  # who ordered it, e.g. "mavlink 255/190"


class MissionStatus(Message):
    """Where a vehicle's mission stands, from its mission manager (latched, every step)."""

    __msgtype__ = "fleetbus/MissionStatus"
    header: Header = msgspec.field(default_factory=Header)
    vehicle_id: str = ""
    mission_id: str = ""
    state: Literal["idle", "active", "holding", "returning", "landing", "failsafe",
                   "completed", "failed"] = "idle"
    waypoint: int = 0  # index of the waypoint being flown to (== waypoints when done)
    waypoints: int = 0  # how many the mission has (the way home not counted)
    distance_to_waypoint_m: float = float("inf")  # m, horizontal; inf without an estimate
    message: str = ""  # why, for the failed and failsafe states
    # the stamp of the last Mission sent to the planner (0: none): a controller follows
    # the path of at least this stamp, and waits for it in lockstep
    plan_stamp_ns: int = 0
