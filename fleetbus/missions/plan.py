"""Missions from GeoJSON files or inline ENU lists, as fleetbus.messages.Mission, so a route
can be drawn in any GIS tool next to the geofence it flies in.

GeoJSON positions are WGS84 [longitude, latitude(, altitude)] (RFC 7946 axis order). The
horizontal position is placed as fleetbus.planners.geojson places a zone vertex (where the
position's vertical line meets the origin's horizontal plane); the third value is not an
ellipsoid height but the waypoint's ENU altitude: metres up from that plane, which is what
a drone's estimate reports (surface vehicles ignore it).

Document layout: a FeatureCollection (or a single Feature) whose waypoints are either

    one LineString feature   its vertices in order; its properties apply to every vertex
    Point features           one waypoint each, in the order of their integer property
                             `seq` (required, unique; gaps are fine)

and nothing else: a mission is one or the other, and any other geometry is refused.

Waypoint properties (unknown ones, e.g. a drawing tool's styling, are ignored; null is
the same as absent):

    alt_m                number  ENU altitude (m) of positions without a third value
                                 (default 0)
    speed_mps            number  speed on the way there, >= 0 (0: the vehicle's default)
    acceptance_radius_m  number  reached when this close, > 0 (default 1): horizontally
                                 for surface vehicles, in 3-D for drones
    hold_s               number  time to stay within the acceptance radius once there, >= 0
    yaw_deg              number  ENU yaw at the waypoint in degrees: 0 east, 90 north
                                 (counter-clockwise, not a compass heading); default none

Collection-level settings live in the foreign member
"fleetbus:mission": {"id": str, "vehicle_id": str, "return_home": bool}, all optional (id:
the file's name without its extension, or "mission"; vehicle_id: any vehicle; return_home:
false). Unknown keys there are refused: they are ours, so a typo is a mistake.

The origin (lat_deg, lon_deg, alt_m) is, in order: the `origin` argument, else the
collection's "fleetbus:origin" member (as in geofence files), else an error. Unlike a
geofence, a mission never takes its first position as the origin: its ENU waypoints are
only meaningful in the frame of the fence and the estimates, so it must be given that
origin (the mission manager gives it the geofence's).

Reading (`read_mission`) and placing (`GeoMission.to_mission`) are separate so that a
node can refuse a bad file at start-up, before the geofence that places it has arrived.
Every error is a MissionError naming the file, the feature and the property.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleetbus.messages import Mission, Vector3, Waypoint
from fleetbus.planners.geojson import (
    ORIGIN_MEMBER,
    JsonSource,
    Origin,
    check_origin,
    document_features,
    feature_parts,
    geo_positions,
    is_number,
    located,
    member_origin,
    plane_xy,
    read_json,
)
from fleetbus.planners.zones import GeofenceError

MISSION_MEMBER = "fleetbus:mission"
MEMBER_KEYS = ("id", "vehicle_id", "return_home")
# Waypoint fields that files and inline lists may set, with the lower bound each must
# keep and whether the bound itself is allowed.
LIMITS = {"speed_mps": (0.0, True), "acceptance_radius_m": (0.0, False),
          "hold_s": (0.0, True)}
ENU_KEYS = ("x", "y", "z", *LIMITS, "yaw_rad")


class MissionError(GeofenceError):
    """A mission that cannot be read or placed; the message names the file, the feature
    (or inline waypoint) and the field. A GeofenceError, because the helpers it shares
    with geofence files raise those and prefix them with where they were found."""


@dataclass(frozen=True, eq=False)
class GeoMission:
    """A mission file read and checked, still in WGS84: placing it needs an origin."""

    name: str  # where it came from, for messages: "mission file 'x.geojson'"
    mission_id: str
    vehicle_id: str  # "" when the file does not say
    return_home: bool
    origin: Origin | None  # the file's "fleetbus:origin", if any
    lat: np.ndarray  # degrees, one per waypoint
    lon: np.ndarray
    up: np.ndarray  # ENU altitude, m
    attributes: tuple[dict[str, Any], ...]  # other Waypoint fields, one dict per waypoint

    def to_mission(self, origin: Sequence[float] | None = None) -> Mission:
        """The mission in the ENU frame around `origin`, else the file's own origin."""
        with _named(self.name):
            if origin is not None:
                frame = check_origin(origin)
            elif self.origin is not None:
                frame = self.origin
            else:
                raise MissionError(f"has no {ORIGIN_MEMBER!r} and no origin was given: a "
                                   f"mission must be placed in its geofence's frame")
        xy = plane_xy(self.lat, self.lon, frame)
        waypoints = [Waypoint(position=Vector3(x=float(x), y=float(y), z=float(z)), **attrs)
                     for (x, y), z, attrs in zip(xy, self.up, self.attributes, strict=True)]
        return Mission(mission_id=self.mission_id, vehicle_id=self.vehicle_id,
                       waypoints=waypoints, return_home=self.return_home)


def load_mission(source: JsonSource, origin: Sequence[float] | None = None) -> Mission:
    """A mission from GeoJSON (a dict, a file path or JSON text) in the ENU frame around
    `origin`, else the file's "fleetbus:origin" (see the module docstring)."""
    return read_mission(source).to_mission(origin)


def read_mission(source: JsonSource) -> GeoMission:
    """A GeoJSON mission read and checked, not yet placed in an ENU frame."""
    try:
        doc = read_json(source, "mission")
    except GeofenceError as exc:  # it names the file already
        raise MissionError(str(exc)) from exc
    name, default_id = _describe(source)
    with _named(name):
        mission_id, vehicle_id, return_home = _settings(doc.get(MISSION_MEMBER, {}),
                                                        default_id)
        origin = member_origin(doc[ORIGIN_MEMBER]) if ORIGIN_MEMBER in doc else None
        lat, lon, up, attributes = _waypoints(document_features(doc))
    return GeoMission(name, mission_id, vehicle_id, return_home, origin, lat, lon, up,
                      tuple(attributes))


def enu_mission(waypoints: Sequence[Mapping[str, Any]], mission_id: str = "mission",
                vehicle_id: str = "", return_home: bool = False) -> Mission:
    """A mission from ENU waypoints given inline (graph files, tests): each a mapping of
    x, y (required), z and the Waypoint fields speed_mps, acceptance_radius_m, hold_s and
    yaw_rad. Unknown keys are refused: here they can only be typos."""
    if not isinstance(waypoints, Sequence) or isinstance(waypoints, str) or not waypoints:
        raise MissionError(f"an inline mission must be a non-empty list of waypoints, got "
                           f"{waypoints!r}")
    return Mission(mission_id=mission_id, vehicle_id=vehicle_id, return_home=return_home,
                   waypoints=[_enu_waypoint(k, w) for k, w in enumerate(waypoints)])


# -- GeoJSON --------------------------------------------------------------------------------


def _describe(source: JsonSource) -> tuple[str, str]:
    """The source's name for messages, and the mission id it implies (a file's stem)."""
    if isinstance(source, Mapping):
        return "mission document", "mission"
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return "mission text", "mission"
    return f"mission file {str(source)!r}", Path(source).stem


@contextmanager
def _named(name: str) -> Iterator[None]:
    """Every error inside as a MissionError that starts with the file's name."""
    try:
        yield
    except GeofenceError as exc:
        raise MissionError(f"{name}: {exc}") from exc


def _settings(member: object, default_id: str) -> tuple[str, str, bool]:
    """Mission id, vehicle id and return_home from the "fleetbus:mission" member."""
    if not isinstance(member, Mapping):
        raise MissionError(f"{MISSION_MEMBER!r} must be an object, got {member!r}")
    unknown = sorted(set(member) - set(MEMBER_KEYS))
    if unknown:
        raise MissionError(f"{MISSION_MEMBER!r} has unknown keys {unknown} (known: "
                           f"{', '.join(MEMBER_KEYS)})")
    mission_id, vehicle_id = member.get("id", default_id), member.get("vehicle_id", "")
    return_home = member.get("return_home", False)
    for key, value, kind in (("id", mission_id, str), ("vehicle_id", vehicle_id, str),
                             ("return_home", return_home, bool)):
        if not isinstance(value, kind):
            raise MissionError(f"{MISSION_MEMBER!r} {key!r} must be a {kind.__name__}, got "
                               f"{value!r}")
    return mission_id, vehicle_id, return_home


def _waypoints(features: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Latitudes, longitudes, ENU altitudes and Waypoint attributes in mission order."""
    lines, points = [], []
    for k, feature in enumerate(features):
        with located(f"feature {k}"):
            geometry, props = feature_parts(feature)
            kind = geometry.get("type")
            if kind not in ("LineString", "Point"):
                raise MissionError(f"unsupported geometry type {kind!r}: a mission is one "
                                   f"LineString or Point features ordered by 'seq'")
            (lines if kind == "LineString" else points).append((k, geometry, props))
    if lines and points:
        raise MissionError(f"mixes a LineString (feature {lines[0][0]}) with Point features "
                           f"(feature {points[0][0]}): a mission is one or the other")
    if len(lines) > 1:
        raise MissionError(f"has {len(lines)} LineString features ({lines[0][0]} and "
                           f"{lines[1][0]}): a mission is one")
    if lines:
        k, geometry, props = lines[0]
        with located(f"feature {k}"):
            lat, lon, height = geo_positions(geometry.get("coordinates"), "LineString")
            return lat, lon, _altitudes(height, props), [_attributes(props)] * len(lat)
    if not points:
        raise MissionError("has no waypoints: give one LineString or Point features")
    rows = [_point(k, geometry, props) for k, geometry, props in _in_sequence(points)]
    lat, lon, up = (np.array(column, float) for column in zip(*(r[:3] for r in rows),
                                                                strict=True))
    return lat, lon, up, [r[3] for r in rows]


def _in_sequence(points: list[tuple[int, Any, Mapping]]) -> list[tuple[int, Any, Mapping]]:
    """Point features sorted by their `seq` property, which must be unique integers."""
    seen: dict[int, int] = {}
    for k, _, props in points:
        seq = props.get("seq")
        with located(f"feature {k}"):
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise MissionError(f"a Point waypoint needs an integer property 'seq' (its "
                                   f"place in the mission), got {seq!r}")
        if seq in seen:
            raise MissionError(f"features {seen[seq]} and {k} have the same 'seq' {seq}")
        seen[seq] = k
    return sorted(points, key=lambda item: item[2]["seq"])


def _point(k: int, geometry: Mapping, props: Mapping) -> tuple[float, float, float, dict]:
    with located(f"feature {k} (seq {props['seq']})"):
        lat, lon, height = geo_positions([geometry.get("coordinates")], "Point")
        up = _altitudes(height, props)
        return float(lat[0]), float(lon[0]), float(up[0]), _attributes(props)


def _altitudes(height: np.ndarray, props: Mapping[str, Any]) -> np.ndarray:
    """Each position's third value, else the `alt_m` property, else 0."""
    alt = props.get("alt_m")
    default = 0.0 if alt is None else _number(props, "alt_m", "property")
    return np.where(np.isfinite(height), height, default)


def _attributes(props: Mapping[str, Any]) -> dict[str, Any]:
    """Waypoint keyword arguments from a feature's properties (null: absent)."""
    attrs = {key: _number(props, key, "property") for key in LIMITS
             if props.get(key) is not None}
    if props.get("yaw_deg") is not None:
        attrs["yaw_rad"] = math.radians(_number(props, "yaw_deg", "property"))
    return attrs


# -- shared checks ----------------------------------------------------------------------------


def _number(values: Mapping[str, Any], key: str, what: str) -> float:
    """values[key] as a finite float within its LIMITS; `what` names the kind of field
    ("property" in a file, "field" inline) in the message."""
    value = values[key]
    if not is_number(value) or not math.isfinite(value):
        raise MissionError(f"{what} {key!r} must be a finite number, got {value!r}")
    bound, inclusive = LIMITS.get(key, (-math.inf, True))
    if value < bound or (value == bound and not inclusive):
        raise MissionError(f"{what} {key!r} must be {'>=' if inclusive else '>'} {bound:g}, "
                           f"got {value!r}")
    return float(value)


def _enu_waypoint(k: int, item: object) -> Waypoint:
    with _named(f"inline mission waypoint {k}"):
        if not isinstance(item, Mapping):
            raise MissionError(f"must be a mapping of {', '.join(ENU_KEYS)}, got {item!r}")
        unknown = sorted(set(item) - set(ENU_KEYS))
        if unknown:
            raise MissionError(f"unknown fields {unknown} (known: {', '.join(ENU_KEYS)})")
        missing = [key for key in ("x", "y") if key not in item]
        if missing:
            raise MissionError(f"needs {' and '.join(missing)} (ENU metres)")
        x, y, z = (_number(item, key, "field") if key in item else 0.0 for key in "xyz")
        attrs = {key: _number(item, key, "field") for key in (*LIMITS, "yaw_rad")
                 if item.get(key) is not None}
        return Waypoint(position=Vector3(x=x, y=y, z=z), **attrs)
