"""GeoJSON import and export of geofences, so fences can be drawn in any GIS tool (QGIS,
geojson.io) instead of typed as ENU numbers.

GeoJSON positions are WGS84 [longitude, latitude(, height)] (RFC 7946, section 3.1.1: that
axis order, not lat/lon). A zone lives in the fence's local ENU frame, so every position is
converted around the fence's origin.

Document layout: a FeatureCollection (or a single Feature); each feature is one zone, or one
zone per part of a MultiPolygon.

    Polygon        polygon zone; rings after the first are holes
    MultiPolygon   one polygon zone per part, ids "<id>/<k>" with k counted from 0
    Point          circle zone around the point; needs the `radius_m` property

Feature properties (unknown ones, e.g. a drawing tool's styling, are ignored):

    id         string       zone id; else the feature's own "id" member; else "zone-<index>"
    inclusion  boolean      true: stay inside (default); false: stay out
    type       string       "inclusion" or "exclusion": the same as `inclusion`, as some tools
                            write it; a feature giving both must not contradict itself
    floor_m    number|null  lowest ENU altitude (m) the zone applies at; null/absent: unbounded
    ceiling_m  number|null  highest ENU altitude (m); null/absent: unbounded
    action     string       breach action: report (default), hold, return or land
    priority   integer      where zones overlap the higher priority wins (default 0)
    radius_m   number       circle radius in metres (Point features only)
    vehicle_types  list     the vehicle types the zone binds ("quadrotor", "vessel", "car");
                            absent: all. One file can then fence a mixed fleet: a harbour
                            basin binds the ships, a road network the cars

The origin (lat_deg, lon_deg, alt_m) is, in order: the `origin` argument; the collection's
foreign member "fleetbus:origin": {"lat_deg": .., "lon_deg": .., "alt_m": ..}, which
`to_geojson` always writes so a round trip keeps the frame; else the first position of the
first feature (its height, or 0 m without one).

A longitude/latitude names a vertical line (along the ellipsoid normal); its zone vertex is
where that line meets the origin's horizontal plane (ENU up = 0). Export puts the vertex on
that plane too, so export then import returns the same ENU vertices to within a micrometre
at any distance from the origin, and positions' heights never move a zone sideways.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pymap3d

from fleetbus.planners.geofence import Geofence
from fleetbus.planners.zones import GeofenceError, Zone

Origin = tuple[float, float, float]
JsonSource = str | Path | Mapping[str, Any]

ORIGIN_MEMBER = "fleetbus:origin"
VEHICLE_TYPES = ("quadrotor", "vessel", "car")

# -- shared with the QGroundControl importer ----------------------------------------------


def read_json(source: JsonSource, what: str) -> Mapping[str, Any]:
    """The JSON object in `source`: a mapping as is, a Path read from disk, and a str read
    as JSON text when it starts with "{" (what a caller holding a document has) and as a
    file path otherwise."""
    if isinstance(source, Mapping):
        return source
    if isinstance(source, str) and source.lstrip().startswith("{"):
        text, name = source, f"{what} text"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        # UnicodeDecodeError: a binary file; ValueError: a NUL in the path
        except (OSError, ValueError) as exc:
            raise GeofenceError(f"cannot read {what} file {str(path)!r}: {exc}") from exc
        name = f"{what} file {str(path)!r}"
    try:
        doc = json.loads(text)
    # ValueError beyond JSONDecodeError: an integer of more than 4300 digits (Python's limit
    # on converting them); RecursionError: arrays nested a few thousand deep
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise GeofenceError(f"{name} is not valid JSON: {why}") from None
    if not isinstance(doc, dict):
        raise GeofenceError(f"{name} must hold a JSON object, got {type(doc).__name__}")
    return doc


@contextmanager
def located(where: str) -> Iterator[None]:
    """Prefix any GeofenceError raised inside with `where`, so a fault found deep down (a
    Zone's own validation, say) still names the feature or item of the file it came from."""
    try:
        yield
    except GeofenceError as exc:
        raise GeofenceError(f"{where}: {exc}") from exc


def is_number(value: object) -> bool:
    """A JSON number (bool is an int in Python but never a number in a file) that converts
    to float: JSON integers have no size limit, and float(10**400) raises OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, float) or abs(value) <= sys.float_info.max


def check_latlon(lat: np.ndarray, lon: np.ndarray, what: str) -> None:
    """Refuse NaN/inf and latitudes or longitudes off the globe, naming the first bad one:
    pymap3d would otherwise return finite nonsense for lat 100."""
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0)
            & (np.abs(lon) <= 180.0))
    if bad.any():
        k = int(np.argmax(bad))
        raise GeofenceError(f"{what}: position {k} has invalid coordinates "
                            f"(lat {lat[k]}, lon {lon[k]}): latitude must be within +-90 "
                            f"and longitude within +-180 degrees")


def check_origin(origin: Sequence[float], what: str = "origin") -> Origin:
    """(lat_deg, lon_deg, alt_m) as floats, checked."""
    if len(origin) != 3 or not all(is_number(v) for v in origin):
        raise GeofenceError(f"{what} must be (lat_deg, lon_deg, alt_m) numbers, got {origin!r}")
    lat, lon, alt = (float(v) for v in origin)
    check_latlon(np.array([lat]), np.array([lon]), what)
    if not math.isfinite(alt):
        raise GeofenceError(f"{what}: altitude is not finite: {alt}")
    return lat, lon, alt


def plane_xy(lat: np.ndarray, lon: np.ndarray, origin: Origin) -> np.ndarray:
    """(N, 2) ENU east/north where each position's vertical line meets the origin's
    horizontal plane. The line is P0 + t * normal (P0 at zero height), so the crossing is
    one linear solve: exact, and vectorised over a whole ring."""
    lat0, lon0, h0 = origin
    e0, n0, u0 = pymap3d.geodetic2enu(lat, lon, np.zeros_like(lat), lat0, lon0, h0)
    la, lo = np.radians(lat), np.radians(lon)
    ne, nn, nu = pymap3d.ecef2enuv(np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo),
                                   np.sin(la), lat0, lon0)
    t = -u0 / nu
    return np.column_stack([e0 + t * ne, n0 + t * nn])


def plane_lonlat(xy: np.ndarray, origin: Origin) -> list[list[float]]:
    """GeoJSON [lon, lat] positions of ENU points on the origin's horizontal plane: the
    inverse of `plane_xy`."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    lat, lon, _ = pymap3d.enu2geodetic(xy[:, 0], xy[:, 1], np.zeros(len(xy)), *origin)
    return [[float(a), float(b)] for a, b in zip(np.atleast_1d(lon), np.atleast_1d(lat),
                                                 strict=True)]


# -- import -------------------------------------------------------------------------------


def load_geojson(source: JsonSource, origin: Sequence[float] | None = None,
                 vehicle_type: str | None = None) -> Geofence:
    """A geofence from a GeoJSON FeatureCollection (a dict, a file path, or JSON text). The
    ENU frame's origin is `origin`, else the collection's "fleetbus:origin" member, else
    the first position of the first feature (see the module docstring). With a
    `vehicle_type`, only the zones that bind it; the origin stays the whole file's."""
    doc = read_json(source, "GeoJSON")
    features = document_features(doc)
    kept = [k for k, f in enumerate(features) if _binds(k, f, vehicle_type)]
    if origin is not None:
        frame = check_origin(origin)
    elif ORIGIN_MEMBER in doc:
        frame = member_origin(doc[ORIGIN_MEMBER])
    elif features:
        frame = _first_position_origin(features[0])
    else:
        return Geofence([], None)  # nothing to place, and nothing to place it by
    zones = [z for k in kept for z in _feature_zones(k, features[k], frame)]
    return Geofence(zones, frame)


def _binds(index: int, feature: object, vehicle_type: str | None) -> bool:
    """Whether the feature's zone binds `vehicle_type` (None: any)."""
    with located(f"feature {index}"):
        _, props = feature_parts(feature)
        types = props.get("vehicle_types")
        if types is None:
            return True
        if not isinstance(types, list) or not all(t in VEHICLE_TYPES for t in types):
            raise GeofenceError(f"property 'vehicle_types' must be a list of "
                                f"{', '.join(VEHICLE_TYPES)}, got {types!r}")
        return vehicle_type is None or vehicle_type in types


def document_features(doc: Mapping[str, Any]) -> list[Any]:
    """The features of a GeoJSON FeatureCollection, or the one Feature given."""
    kind = doc.get("type")
    if kind == "Feature":
        return [doc]
    if kind != "FeatureCollection":
        raise GeofenceError(f"GeoJSON must be a FeatureCollection or a Feature, got type "
                            f"{kind!r}")
    features = doc.get("features")
    if not isinstance(features, list):
        raise GeofenceError("GeoJSON FeatureCollection has no 'features' list")
    return features


def member_origin(member: object) -> Origin:
    """The geodetic origin in a document's origin member, checked."""
    keys = ("lat_deg", "lon_deg", "alt_m")
    if not isinstance(member, Mapping) or any(k not in member for k in keys):
        raise GeofenceError(f"GeoJSON {ORIGIN_MEMBER!r} must be an object with "
                            f"{', '.join(keys)}, got {member!r}")
    return check_origin([member[k] for k in keys], f"GeoJSON {ORIGIN_MEMBER!r}")


def _first_position_origin(feature: object) -> Origin:
    """The first position of the first feature, at its height (0 m without one)."""
    with located("feature 0"):
        coords = feature_parts(feature)[0].get("coordinates")
        while isinstance(coords, list) and coords and isinstance(coords[0], list):
            coords = coords[0]
        lat, lon, height = geo_positions([coords], "first position")
        alt = float(height[0]) if np.isfinite(height[0]) else 0.0
        return check_origin((float(lat[0]), float(lon[0]), alt), "origin")


def feature_parts(feature: object) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """A feature's geometry and properties objects, checked for shape."""
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise GeofenceError("is not a GeoJSON Feature object")
    geometry = feature.get("geometry")
    if not isinstance(geometry, Mapping):
        raise GeofenceError("has no geometry object")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise GeofenceError("'properties' is not an object")
    return geometry, props


def _feature_zones(index: int, feature: object, origin: Origin) -> list[Zone]:
    with located(f"feature {index}"):
        geometry, props = feature_parts(feature)
        zone_id = _zone_id(index, feature, props)
    with located(f"feature {index} ({zone_id!r})"):
        kind = geometry.get("type")
        build = _BUILDERS.get(kind) if isinstance(kind, str) else None  # a list: unhashable
        if build is None:
            raise GeofenceError(f"unsupported geometry type {geometry.get('type')!r} "
                                f"(one of {', '.join(_BUILDERS)})")
        return build(zone_id, geometry.get("coordinates"), props, origin)


def _zone_id(index: int, feature: Any, props: Mapping[str, Any]) -> str:
    zone_id = props.get("id", feature.get("id", f"zone-{index}"))
    if not isinstance(zone_id, str | int) or isinstance(zone_id, bool):
        raise GeofenceError(f"property 'id' must be a string, got {zone_id!r}")
    return str(zone_id)


def _attributes(props: Mapping[str, Any]) -> dict[str, Any]:
    """Zone keyword arguments from the feature's properties, each type-checked here so
    the message names the property rather than failing later inside shapely."""
    floor, ceiling = (_optional_number(props, k) for k in ("floor_m", "ceiling_m"))
    action = props.get("action", "report")
    if not isinstance(action, str):
        raise GeofenceError(f"property 'action' must be a string, got {action!r}")
    priority = props.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise GeofenceError(f"property 'priority' must be an integer, got {priority!r}")
    if not -(2**63) <= priority < 2**63:  # the fence travels as a message, priority an int64
        raise GeofenceError(f"property 'priority' {priority} is outside the 64-bit range")
    return {"inclusion": _inclusion(props),
            "floor_m": -math.inf if floor is None else floor,
            "ceiling_m": math.inf if ceiling is None else ceiling,
            "action": action, "priority": priority}


def _optional_number(props: Mapping[str, Any], key: str) -> float | None:
    value = props.get(key)
    if value is None:
        return None
    if not is_number(value):
        raise GeofenceError(f"property {key!r} must be a number or null, got {value!r}")
    return float(value)


def _inclusion(props: Mapping[str, Any]) -> bool:
    inclusion = props.get("inclusion")
    if inclusion is not None and not isinstance(inclusion, bool):
        raise GeofenceError(f"property 'inclusion' must be true or false, got {inclusion!r}")
    kind = props.get("type")
    if kind is not None and kind not in ("inclusion", "exclusion"):
        raise GeofenceError(f"property 'type' must be 'inclusion' or 'exclusion', "
                            f"got {kind!r}")
    by_type = None if kind is None else kind == "inclusion"
    if inclusion is not None and by_type is not None and inclusion != by_type:
        raise GeofenceError(f"property 'inclusion' ({inclusion}) contradicts 'type' "
                            f"({kind!r})")
    return next((v for v in (inclusion, by_type) if v is not None), True)


def geo_positions(raw: object, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitudes, longitudes and heights (NaN where absent) of a list of GeoJSON
    positions, checked."""
    if not isinstance(raw, list) or not raw:
        raise GeofenceError(f"{what} must be a non-empty list of positions, got {raw!r}")
    for k, p in enumerate(raw):
        if not (isinstance(p, list) and len(p) in (2, 3) and all(is_number(v) for v in p)):
            raise GeofenceError(f"{what}: position {k} must be [lon, lat] or "
                                f"[lon, lat, height] numbers, got {p!r}")
    arr = np.array([[*p, math.nan][:3] for p in raw], float)
    lon, lat, height = arr.T
    check_latlon(lat, lon, what)
    return lat, lon, height


def _rings(raw: object, origin: Origin, what: str) -> list[np.ndarray]:
    """The ENU rings of a GeoJSON polygon (outline first, then holes)."""
    if not isinstance(raw, list) or not raw:
        raise GeofenceError(f"{what} must be a non-empty list of linear rings, got {raw!r}")
    rings = []
    for k, ring in enumerate(raw):
        lat, lon, _ = geo_positions(ring, f"{what} ring {k}")
        rings.append(plane_xy(lat, lon, origin))
    return rings


def _polygon_zones(zone_id: str, coords: object, props: Mapping[str, Any],
                   origin: Origin) -> list[Zone]:
    rings = _rings(coords, origin, "Polygon")
    return [Zone.polygon(zone_id, rings[0], rings[1:], **_attributes(props))]


def _multipolygon_zones(zone_id: str, coords: object, props: Mapping[str, Any],
                        origin: Origin) -> list[Zone]:
    if not isinstance(coords, list) or not coords:
        raise GeofenceError(f"MultiPolygon must be a non-empty list of polygons, got "
                            f"{coords!r}")
    attributes = _attributes(props)
    zones = []
    for k, part in enumerate(coords):
        rings = _rings(part, origin, f"MultiPolygon part {k}")
        zones.append(Zone.polygon(f"{zone_id}/{k}", rings[0], rings[1:], **attributes))
    return zones


def _circle_zones(zone_id: str, coords: object, props: Mapping[str, Any],
                  origin: Origin) -> list[Zone]:
    lat, lon, _ = geo_positions([coords], "Point")
    if "radius_m" not in props:
        raise GeofenceError("a Point zone needs the 'radius_m' property (metres)")
    radius = props["radius_m"]
    if not is_number(radius):
        raise GeofenceError(f"property 'radius_m' must be a number, got {radius!r}")
    centre = plane_xy(lat, lon, origin)[0]
    return [Zone.circle_zone(zone_id, centre, float(radius), **_attributes(props))]


_BUILDERS: dict[str, Callable[[str, object, Mapping[str, Any], Origin], list[Zone]]] = {
    "Polygon": _polygon_zones,
    "MultiPolygon": _multipolygon_zones,
    "Point": _circle_zones,
}

# -- export -------------------------------------------------------------------------------


def to_geojson(fence: Geofence) -> dict[str, Any]:
    """The fence as a GeoJSON FeatureCollection (one feature per zone; circles as a Point
    with `radius_m`, so they come back as circles rather than 64-gons), with the origin
    as the "fleetbus:origin" member. A fence without an origin has no place on the globe
    and is refused."""
    if fence.origin is None:
        raise GeofenceError("a geofence without a geodetic origin cannot be written as "
                            "GeoJSON: give Geofence(zones, origin=(lat, lon, alt))")
    origin = check_origin(fence.origin, "geofence origin")
    return {
        "type": "FeatureCollection",
        ORIGIN_MEMBER: dict(zip(("lat_deg", "lon_deg", "alt_m"), origin, strict=True)),
        "features": [_feature(zone, origin) for zone in fence.zones],
    }


def dump_geojson(fence: Geofence, path: str | Path) -> None:
    """Write `to_geojson(fence)` to `path` as indented JSON."""
    text = json.dumps(to_geojson(fence), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def _feature(zone: Zone, origin: Origin) -> dict[str, Any]:
    props: dict[str, Any] = {
        "id": zone.zone_id,
        "inclusion": zone.inclusion,
        "floor_m": float(zone.floor_m) if math.isfinite(zone.floor_m) else None,
        "ceiling_m": float(zone.ceiling_m) if math.isfinite(zone.ceiling_m) else None,
        "action": zone.action,
        "priority": int(zone.priority),
    }
    if zone.circle is not None:
        cx, cy, radius = zone.circle
        geometry = {"type": "Point", "coordinates": plane_lonlat(np.array([cx, cy]), origin)[0]}
        props["radius_m"] = float(radius)
    else:
        # Zone shapes are oriented counter-clockwise outside, clockwise for holes: RFC 7946's
        # right-hand rule already, and the rings are closed as GeoJSON requires.
        rings = [zone.shape.exterior, *zone.shape.interiors]
        geometry = {"type": "Polygon",
                    "coordinates": [plane_lonlat(np.asarray(r.coords), origin) for r in rings]}
    return {"type": "Feature", "id": zone.zone_id, "geometry": geometry, "properties": props}
