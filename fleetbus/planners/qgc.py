"""QGroundControl .plan import: the plan's geofence as a Geofence in a local ENU frame, and
its mission waypoints in the same frame, so a mission planned in QGC can be checked against
its own fence (or planned around it) without re-entering anything.

The format, as QGroundControl reads and writes it (github.com/mavlink/qgroundcontrol:
src/MissionManager/PlanMasterController.h, GeoFenceController.{h,cc}, QGCFencePolygon.{h,cc},
QGCFenceCircle.{h,cc}, QGCMapPolygon.cc, QGCMapCircle.cc, MissionItem.cc, and the developer
guide docs/en/qgc-dev-guide/file_formats/plan.md):

    {"fileType": "Plan", "version": 1,
     "geoFence": {"version": 2,
                  "polygons": [{"version": 1, "inclusion": true,
                                "polygon": [[lat, lon], ...]}],
                  "circles": [{"version": 1, "inclusion": false,
                               "circle": {"center": [lat, lon], "radius": metres}}],
                  "breachReturn": [lat, lon, alt]},
     "mission": {"version": 2, "plannedHomePosition": [lat, lon, amsl_alt],
                 "items": [{"type": "SimpleItem", "command": 16, "frame": 3,
                            "params": [p1, p2, p3, p4, lat, lon, alt]}, ...]},
     "rallyPoints": {...}}

Note QGC's positions are [lat, lon], the other way round from GeoJSON. QGC silently loads a
fence of version 1 (or without a version) as empty; here it is refused, since dropping a
fence without a word is the one outcome a safety check must not have. Older QGC releases
wrote circles without a "version" (QGCFenceCircle.cc then checked none); they are accepted.

QGC zones have no altitude band and no breach action (the vehicle's parameters decide what
a breach does): every zone is unbounded in altitude and gets the `action` argument.
Ids are "qgc-polygon-<k>" and "qgc-circle-<k>", k counting each list from 0. Vertices are
placed as in fleetbus.planners.geojson (on the origin's horizontal plane).

Waypoints: every SimpleItem whose command is a navigation command with a position (see
NAV_POSITION_COMMANDS), in file order, as ENU (x, y, z). Items at lat = lon = 0 or with a
null latitude/longitude mean "where the vehicle is" to the autopilot and are skipped, as are
ComplexItems (surveys, corridor scans: their transects are generated, not stored as
waypoints). Altitude frames: AMSL (MAV_FRAME_GLOBAL, _INT) as is; relative to home
(MAV_FRAME_GLOBAL_RELATIVE_ALT, _INT) added to plannedHomePosition's altitude; terrain
frames are refused, as turning them into heights needs terrain data. AMSL heights are used
as ellipsoid heights: the geoid offset is common to every point of a local plan, so it
cancels against the origin's altitude (also AMSL) to well under a metre.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymap3d

from fleetbus.planners.geofence import Geofence
from fleetbus.planners.geojson import (
    JsonSource,
    Origin,
    check_latlon,
    check_origin,
    is_number,
    located,
    plane_xy,
    read_json,
)
from fleetbus.planners.zones import Action, GeofenceError, Zone

PLAN_FILE_TYPE = "Plan"  # PlanMasterController::kPlanFileType
PLAN_VERSION = 1  # PlanMasterController::kPlanFileVersion
GEOFENCE_VERSION = 2  # GeoFenceController::_jsonCurrentVersion
FENCE_ITEM_VERSION = 1  # QGCFencePolygon / QGCFenceCircle::_jsonCurrentVersion
MISSION_VERSION = 2  # the "params" layout; version 1 used "coordinate" and "param1".."param4"

# MAV_CMD_NAV_* commands whose params[4:7] are a position (mavlink common.xml): WAYPOINT,
# LOITER_UNLIM, LOITER_TURNS, LOITER_TIME, LAND, TAKEOFF, LOITER_TO_ALT, SPLINE_WAYPOINT,
# VTOL_TAKEOFF, VTOL_LAND, PAYLOAD_PLACE.
NAV_POSITION_COMMANDS = frozenset({16, 17, 18, 19, 21, 22, 31, 82, 84, 85, 94})
AMSL_FRAMES = frozenset({0, 5})  # MAV_FRAME_GLOBAL, MAV_FRAME_GLOBAL_INT
RELATIVE_FRAMES = frozenset({3, 6})  # MAV_FRAME_GLOBAL_RELATIVE_ALT(_INT)

Waypoint = tuple[float, float, float]


def load_qgc_plan(source: JsonSource, origin: Sequence[float] | None = None, *,
                  action: Action = "report") -> tuple[Geofence, list[Waypoint]]:
    """The geofence and the ENU mission waypoints of a QGroundControl plan (a dict, a file
    path, or JSON text). The ENU origin is `origin`, else the mission's plannedHomePosition,
    else the first fence vertex (at 0 m). Every zone gets breach action `action`."""
    plan = read_json(source, "QGC plan")
    _check_header(plan)
    fence = _object(plan, "geoFence", "plan")
    mission = _object(plan, "mission", "plan")
    if fence:
        _check_version(fence, "geoFence", GEOFENCE_VERSION, required=True)
    if mission:
        _check_version(mission, "mission", MISSION_VERSION, required=False)
    home = _home(mission)
    items = [_polygon_item(k, raw) for k, raw in enumerate(_list(fence, "polygons", "geoFence"))]
    items += [_circle_item(k, raw) for k, raw in enumerate(_list(fence, "circles", "geoFence"))]
    enu_origin = _choose_origin(origin, home, items)
    zones = [_zone(item, enu_origin, action) for item in items] if enu_origin else []
    waypoints = _waypoints(_list(mission, "items", "mission"), home, enu_origin)
    return Geofence(zones, enu_origin), waypoints


@dataclass(frozen=True)
class _FenceItem:
    """One geoFence entry, parsed and checked but still geodetic: the origin may be its
    own first vertex, so it is chosen only once every entry has been read."""

    zone_id: str
    where: str
    inclusion: bool
    lat: np.ndarray
    lon: np.ndarray
    radius_m: float | None = None  # None for a polygon


def _choose_origin(origin: Sequence[float] | None, home: Origin | None,
                   items: list[_FenceItem]) -> Origin | None:
    """The argument, else the planned home, else the first fence vertex at 0 m; None only
    for a plan with nothing to place."""
    if origin is not None:
        return check_origin(origin)
    if home is not None:
        return home
    if items:
        return float(items[0].lat[0]), float(items[0].lon[0]), 0.0
    return None


def _check_header(plan: Mapping[str, Any]) -> None:
    if plan.get("fileType") != PLAN_FILE_TYPE:
        raise GeofenceError(f"not a QGroundControl plan: fileType is {plan.get('fileType')!r}"
                            f" (expected {PLAN_FILE_TYPE!r})")
    _check_version(plan, "plan", PLAN_VERSION, required=True)


def _check_version(obj: Mapping[str, Any], where: str, supported: int, *,
                   required: bool) -> None:
    """Refuse a version this reader was not written for: a newer layout read with the old
    rules would give a wrong fence, not an error."""
    if "version" not in obj and not required:
        return
    version = obj.get("version")
    if version != supported or isinstance(version, bool):
        raise GeofenceError(f"{where} version {version!r} is not supported (only "
                            f"{supported})")


def _object(parent: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, Mapping):
        raise GeofenceError(f"{where} {key!r} must be an object, got {value!r}")
    return value


def _list(parent: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = parent.get(key, [])
    if not isinstance(value, list):
        raise GeofenceError(f"{where} {key!r} must be a list, got {value!r}")
    return value


def _latlon(raw: object, what: str) -> tuple[float, float]:
    """A QGC [lat, lon(, alt)] coordinate's latitude and longitude, checked."""
    if not (isinstance(raw, list) and len(raw) in (2, 3) and all(is_number(v) for v in raw)):
        raise GeofenceError(f"{what} must be [lat, lon] numbers, got {raw!r}")
    lat, lon = float(raw[0]), float(raw[1])
    check_latlon(np.array([lat]), np.array([lon]), what)
    return lat, lon


def _home(mission: Mapping[str, Any]) -> Origin | None:
    raw = mission.get("plannedHomePosition")
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise GeofenceError(f"mission plannedHomePosition must be [lat, lon, alt], got {raw!r}")
    return check_origin(raw, "mission plannedHomePosition")


def _entry(raw: object, kind: str) -> tuple[Mapping[str, Any], bool]:
    """A fence entry and its inclusion flag, after checking the entry is an object of a
    version this reader knows (QGC requires "version" on polygons; old circles lack it)."""
    if not isinstance(raw, Mapping):
        raise GeofenceError(f"is not an object, got {raw!r}")
    _check_version(raw, kind, FENCE_ITEM_VERSION, required=kind == "polygon")
    inclusion = raw.get("inclusion")
    if not isinstance(inclusion, bool):
        raise GeofenceError(f"'inclusion' must be true or false, got {inclusion!r}")
    return raw, inclusion


def _polygon_item(k: int, raw: object) -> _FenceItem:
    where = f"geoFence polygon {k}"
    with located(where):
        entry, inclusion = _entry(raw, "polygon")
        vertices = entry.get("polygon")
        if not isinstance(vertices, list) or not vertices:
            raise GeofenceError(f"'polygon' must be a non-empty list of [lat, lon], "
                                f"got {vertices!r}")
        lat, lon = np.array([_latlon(v, f"vertex {j}") for j, v in enumerate(vertices)]).T
        return _FenceItem(f"qgc-polygon-{k}", where, inclusion, lat, lon)


def _circle_item(k: int, raw: object) -> _FenceItem:
    where = f"geoFence circle {k}"
    with located(where):
        entry, inclusion = _entry(raw, "circle")
        circle = entry.get("circle")
        if not isinstance(circle, Mapping) or "center" not in circle or "radius" not in circle:
            raise GeofenceError(f"'circle' must be {{'center': [lat, lon], 'radius': m}}, "
                                f"got {circle!r}")
        lat, lon = _latlon(circle["center"], "center")
        radius = circle["radius"]
        if not is_number(radius):
            raise GeofenceError(f"'radius' must be a number, got {radius!r}")
        return _FenceItem(f"qgc-circle-{k}", where, inclusion, np.array([lat]),
                          np.array([lon]), float(radius))


def _zone(item: _FenceItem, origin: Origin, action: Action) -> Zone:
    with located(item.where):
        xy = plane_xy(item.lat, item.lon, origin)
        if item.radius_m is None:
            return Zone.polygon(item.zone_id, xy, inclusion=item.inclusion, action=action)
        return Zone.circle_zone(item.zone_id, xy[0], item.radius_m, inclusion=item.inclusion,
                                action=action)


def _waypoints(items: list[Any], home: Origin | None, origin: Origin | None) -> list[Waypoint]:
    geodetic = [p for k, item in enumerate(items) if (p := _item_position(k, item, home))]
    if not geodetic:
        return []
    if origin is None:
        raise GeofenceError("the mission has waypoints but the plan has no origin (no "
                            "plannedHomePosition and no fence): pass origin=")
    lat, lon, alt = np.array(geodetic, float).T
    x, y, z = pymap3d.geodetic2enu(lat, lon, alt, *origin)
    return [(float(a), float(b), float(c)) for a, b, c in zip(x, y, z, strict=True)]


def _item_position(k: int, item: object, home: Origin | None) -> Waypoint | None:
    """(lat, lon, height) of a mission item that flies to a position, else None."""
    where = f"mission item {k}"
    if not isinstance(item, Mapping):
        raise GeofenceError(f"{where} is not an object")
    if item.get("type") != "SimpleItem" or item.get("command") not in NAV_POSITION_COMMANDS:
        return None
    params = item.get("params")
    if not isinstance(params, list) or len(params) != 7:
        raise GeofenceError(f"{where}: 'params' must be a list of 7 values, got {params!r}")
    lat, lon, alt = params[4:7]
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None  # "here": the autopilot uses the vehicle's own position
    with located(where):
        lat, lon = _latlon([lat, lon], "position")
        return lat, lon, _height(item.get("frame"), alt, home)


def _height(frame: object, alt: object, home: Origin | None) -> float:
    """The item's altitude as a height comparable with the origin's altitude (AMSL)."""
    if not is_number(alt):
        raise GeofenceError(f"altitude must be a number, got {alt!r}")
    if frame in AMSL_FRAMES:
        return float(alt)
    if frame in RELATIVE_FRAMES:
        if home is None:
            raise GeofenceError("altitude is relative to home but the plan has no "
                                "plannedHomePosition")
        return home[2] + float(alt)
    raise GeofenceError(f"altitude frame {frame!r} is not supported (AMSL frames "
                        f"{sorted(AMSL_FRAMES)} or home-relative frames "
                        f"{sorted(RELATIVE_FRAMES)}; terrain frames need terrain data)")
