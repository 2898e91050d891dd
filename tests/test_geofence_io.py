"""Geofence files: GeoJSON export and import (a round trip keeps every zone, its attributes
and its vertices to 1e-6 m; origin handling; every malformed input refused with the
feature named) and QGroundControl .plan import (fence zones and waypoints checked against
pymap3d directly, version checks, and the imported fence answering containment)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pymap3d
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetbus.planners import Geofence, GeofenceError, Zone
from fleetbus.planners.geojson import ORIGIN_MEMBER, dump_geojson, load_geojson, to_geojson
from fleetbus.planners.qgc import load_qgc_plan

DATA = Path(__file__).resolve().parent / "data"
ORIGIN = (54.32, 10.14, 5.0)
HOME = (-35.363261, 149.16523, 584.0)  # survey.plan's plannedHomePosition


def everything(origin: tuple[float, float, float] | None = ORIGIN) -> Geofence:
    """A polygon with a hole, an inclusion and an exclusion circle, bands, every action,
    priorities, and a zone 17 km out where a sloppy projection would show."""
    return Geofence([
        Zone.polygon("yard", [(0, 0), (300, 0), (300, 200), (0, 200)],
                     holes=[[(100, 50), (150, 50), (150, 100), (100, 100)]], ceiling_m=120.0,
                     action="return"),
        Zone.circle_zone("mast", (220, 150), 12.5, inclusion=False, floor_m=10.0,
                         ceiling_m=60.0, action="land", priority=2),
        Zone.circle_zone("pad", (50, 150), 30.0, action="hold", priority=1),
        Zone.polygon("far", [(15000, -8000), (15100, -8000), (15050, -7900)], inclusion=False,
                     floor_m=-20.0),
    ], origin)


def assert_same_zones(a: Geofence, b: Geofence, tol: float = 1e-6) -> None:
    assert [z.zone_id for z in a.zones] == [z.zone_id for z in b.zones]
    for za, zb in zip(a.zones, b.zones, strict=True):
        attrs = ("inclusion", "floor_m", "ceiling_m", "action", "priority")
        assert [getattr(za, k) for k in attrs] == [getattr(zb, k) for k in attrs], za.zone_id
        assert za.shape.equals_exact(zb.shape, tol), za.zone_id  # vertex by vertex, in order
        assert (za.circle is None) == (zb.circle is None), za.zone_id
        if za.circle is not None:
            np.testing.assert_allclose(za.circle, zb.circle, rtol=0, atol=tol)


def enu(lat: float, lon: float, alt: float, origin: tuple[float, float, float]) -> np.ndarray:
    return np.array(pymap3d.geodetic2enu(lat, lon, alt, *origin), float)


# -- GeoJSON round trip --------------------------------------------------------------------------


def test_round_trip_through_json_text_keeps_every_zone() -> None:
    fence = everything()
    back = load_geojson(json.dumps(to_geojson(fence)))
    assert back.origin == fence.origin
    assert_same_zones(fence, back)


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    fence = everything()
    path = tmp_path / "fence.geojson"
    dump_geojson(fence, path)
    assert_same_zones(fence, load_geojson(path))
    assert_same_zones(fence, load_geojson(str(path)))


def test_written_document_is_rfc7946_geojson() -> None:
    doc = to_geojson(everything())
    assert doc["type"] == "FeatureCollection"
    assert doc[ORIGIN_MEMBER] == {"lat_deg": 54.32, "lon_deg": 10.14, "alt_m": 5.0}
    yard, mast = doc["features"][:2]
    outline, hole = yard["geometry"]["coordinates"]
    assert outline[0] == outline[-1] and hole[0] == hole[-1]  # closed rings
    assert outline[0] == pytest.approx([10.14, 54.32], abs=1e-12)  # lon first, then lat

    def signed_area(ring: list[list[float]]) -> float:
        x, y = np.array(ring).T
        return float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))

    assert signed_area(outline) > 0 > signed_area(hole)  # right-hand rule
    assert yard["properties"]["floor_m"] is None and yard["properties"]["ceiling_m"] == 120.0
    assert mast["geometry"]["type"] == "Point"
    assert mast["properties"]["radius_m"] == 12.5 and mast["properties"]["inclusion"] is False
    json.dumps(doc, allow_nan=False)  # no inf/NaN leaks into the file


@settings(max_examples=25, deadline=None)
@given(lat=st.floats(-85, 85), lon=st.floats(-180, 180), alt=st.floats(-400, 9000),
       dx=st.floats(-50e3, 50e3), dy=st.floats(-50e3, 50e3))
def test_round_trip_anywhere_on_the_globe(lat: float, lon: float, alt: float, dx: float,
                                          dy: float) -> None:
    fence = Geofence([Zone.polygon("tri", [(dx, dy), (dx + 80, dy), (dx, dy + 60)]),
                      Zone.circle_zone("c", (dy, dx), 40.0, inclusion=False)], (lat, lon, alt))
    assert_same_zones(fence, load_geojson(json.dumps(to_geojson(fence))))


# -- GeoJSON import ------------------------------------------------------------------------------


def test_harbour_fixture() -> None:
    fence = load_geojson(DATA / "harbour.geojson")
    assert fence.origin == ORIGIN
    assert [z.zone_id for z in fence.zones] == ["basin", "ferry-lane/0", "ferry-lane/1", "crane"]
    basin, lane0, lane1, crane = fence.zones
    assert (basin.inclusion, basin.ceiling_m, basin.action, len(basin.shape.interiors)) == (
        True, 120.0, "return", 1)
    for lane in (lane0, lane1):  # "type": "exclusion" stands for inclusion false
        assert (lane.inclusion, lane.floor_m, lane.ceiling_m, lane.action, lane.priority) == (
            False, -math.inf, 30.0, "hold", 1)
    assert (crane.inclusion, crane.floor_m, crane.ceiling_m, crane.action, crane.priority) == (
        False, 0.0, 80.0, "land", 2)
    np.testing.assert_allclose(crane.circle[:2], enu(54.3210, 10.1425, 5.0, ORIGIN)[:2],
                               atol=1e-3)
    assert crane.circle[2] == 25.0

    def at(lat: float, lon: float, z: float) -> list[float]:
        return [*enu(lat, lon, ORIGIN[2], ORIGIN)[:2], z]

    cases = {
        "open water": (at(54.3200, 10.1400, 50), True),
        "pier (a hole)": (at(54.3200, 10.14075, 50), False),
        "ferry lane, low": (at(54.31875, 10.1390, 20), False),
        "above the ferry lane": (at(54.31875, 10.1390, 40), True),
        "crane": (at(54.3210, 10.1425, 50), False),
        "above the crane": (at(54.3210, 10.1425, 100), True),
        "above the ceiling": (at(54.3200, 10.1400, 130), False),
        "outside the basin": (at(54.3230, 10.1400, 50), False),
    }
    got = fence.contains(np.array([p for p, _ in cases.values()]))
    assert dict(zip(cases, got.tolist(), strict=True)) == {k: v for k, (_, v) in cases.items()}


def harbour_doc() -> dict[str, Any]:
    return json.loads((DATA / "harbour.geojson").read_text())


def test_origin_argument_overrides_the_member() -> None:
    shifted = load_geojson(harbour_doc(), origin=(54.321, 10.14, 5.0))
    default = load_geojson(harbour_doc())
    dy = shifted.zone("basin").shape.bounds[1] - default.zone("basin").shape.bounds[1]
    assert dy == pytest.approx(-111.3, abs=0.5)  # the origin moved 0.001 deg north


def test_origin_defaults_to_the_first_position() -> None:
    doc = harbour_doc()
    del doc[ORIGIN_MEMBER]
    fence = load_geojson(doc)
    assert fence.origin == (54.318, 10.138, 0.0)  # no height given: 0 m
    assert min(np.hypot(*np.asarray(fence.zone("basin").shape.exterior.coords).T)) < 1e-9


def test_origin_from_a_point_with_height_and_a_bare_feature() -> None:
    feature = {"type": "Feature", "properties": {"radius_m": 10.0},
               "geometry": {"type": "Point", "coordinates": [10.0, 50.0, 12.0]}}
    fence = load_geojson(feature)
    assert fence.origin == (50.0, 10.0, 12.0)
    assert fence.zones[0].zone_id == "zone-0"  # no id anywhere
    np.testing.assert_allclose(fence.zones[0].circle, (0.0, 0.0, 10.0), atol=1e-9)


def test_empty_collection_and_unplaced_fence() -> None:
    empty = load_geojson({"type": "FeatureCollection", "features": []})
    assert empty.zones == () and empty.origin is None
    with pytest.raises(GeofenceError, match="without a geodetic origin"):
        to_geojson(everything(origin=None))


SQUARE = [[10.0, 50.0], [10.001, 50.0], [10.001, 50.001], [10.0, 50.001], [10.0, 50.0]]


def two_features() -> dict[str, Any]:
    """A valid collection; the error cases spoil feature 1 ("z") so the index shows."""
    def feature(zone_id: str) -> dict[str, Any]:
        return {"type": "Feature", "properties": {"id": zone_id},
                "geometry": {"type": "Polygon", "coordinates": [copy.deepcopy(SQUARE)]}}

    return {"type": "FeatureCollection", "features": [feature("ok"), feature("z")]}


def spoil(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    doc = two_features()
    change(doc["features"][1])
    return doc


def props(**values: object) -> Callable[[dict[str, Any]], object]:
    return lambda f: f["properties"].update(values)


def geometry(geom: dict[str, Any]) -> Callable[[dict[str, Any]], object]:
    return lambda f: f.update(geometry=geom)


def vertex(k: int, position: list[float]) -> Callable[[dict[str, Any]], object]:
    return lambda f: f["geometry"]["coordinates"][0].__setitem__(k, position)


@pytest.mark.parametrize(("doc", "words"), [
    (spoil(geometry({"type": "LineString", "coordinates": SQUARE})),
     ["feature 1 ('z')", "unsupported geometry type 'LineString'"]),
    (spoil(geometry({"type": "Point", "coordinates": [10.0, 50.0]})),
     ["feature 1 ('z')", "needs the 'radius_m' property"]),
    (spoil(lambda f: f.update(geometry={"type": "Point", "coordinates": [10.0, 50.0]},
                              properties={"id": "z", "radius_m": "big"})),
     ["feature 1 ('z')", "'radius_m' must be a number"]),
    (spoil(props(inclusion="yes")), ["feature 1 ('z')", "'inclusion' must be true or false"]),
    (spoil(props(type="keep-out")), ["feature 1 ('z')", "'type' must be 'inclusion' or"]),
    (spoil(props(inclusion=False, type="inclusion")), ["feature 1 ('z')", "contradicts"]),
    (spoil(props(priority=1.5)), ["feature 1 ('z')", "'priority' must be an integer, got 1.5"]),
    (spoil(props(floor_m="10")), ["feature 1 ('z')", "'floor_m' must be a number or null"]),
    (spoil(props(action=3)), ["feature 1 ('z')", "'action' must be a string"]),
    (spoil(props(action="explode")), ["feature 1 ('z')", "unknown breach action 'explode'"]),
    (spoil(props(id=["z"])), ["feature 1", "'id' must be a string"]),
    (spoil(vertex(2, [10.001, 91.0])),
     ["feature 1 ('z')", "ring 0", "position 2 has invalid coordinates", "lat 91.0"]),
    (spoil(vertex(1, [200.0, 50.0])), ["feature 1 ('z')", "position 1", "lon 200.0"]),
    (spoil(vertex(1, [math.nan, 50.0])), ["feature 1 ('z')", "position 1", "invalid"]),
    (spoil(vertex(1, ["10", "50"])), ["feature 1 ('z')", "position 1 must be [lon, lat]"]),
    (spoil(lambda f: f["geometry"].update(coordinates=[[[10.0, 50.0], [10.001, 50.001],
                                                        [10.001, 50.0], [10.0, 50.001]]])),
     ["feature 1 ('z')", "zone 'z'", "not simple", "Self-intersection"]),
    (spoil(props(floor_m=50, ceiling_m=10)),
     ["feature 1 ('z')", "floor 50.0 m is not below its ceiling 10.0 m"]),
    (spoil(lambda f: f.update(geometry={"type": "MultiPolygon", "coordinates": [
        [SQUARE], [[[10.0, 50.0], [10.001, 50.0], [10.0, 50.0]]]]})),
     ["feature 1 ('z')", "zone 'z/1'", "at least 3 distinct vertices"]),
    (spoil(lambda f: f.pop("geometry")), ["feature 1", "no geometry object"]),
    (spoil(props(id="ok")), ["zone id 'ok' is used twice"]),
    ({"type": "Polygon", "coordinates": [SQUARE]}, ["FeatureCollection or a Feature"]),
    ({"type": "FeatureCollection", ORIGIN_MEMBER: {"lat_deg": 95.0, "lon_deg": 0.0,
                                                   "alt_m": 0.0}, "features": []},
     ["'fleetbus:origin'", "invalid coordinates"]),
    ({"type": "FeatureCollection", ORIGIN_MEMBER: [50.0, 10.0], "features": []},
     ["'fleetbus:origin' must be an object"]),
    ('{"type": "FeatureCollection", ', ["GeoJSON text is not valid JSON"]),
    ("/no/such/fence.geojson", ["cannot read GeoJSON file '/no/such/fence.geojson'"]),
])
def test_geojson_errors_name_the_feature_and_the_fault(doc: Any, words: list[str]) -> None:
    with pytest.raises(GeofenceError) as err:
        load_geojson(doc)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_bad_origin_argument() -> None:
    with pytest.raises(GeofenceError, match="origin: position 0 has invalid coordinates"):
        load_geojson(two_features(), origin=(50.0, 181.0, 0.0))


# -- QGroundControl .plan import -----------------------------------------------------------------


def plan_doc() -> dict[str, Any]:
    return json.loads((DATA / "survey.plan").read_text())


def test_plan_fixture_zones_match_pymap3d() -> None:
    fence, _ = load_qgc_plan(DATA / "survey.plan")
    assert fence.origin == HOME  # plannedHomePosition
    assert [(z.zone_id, z.inclusion) for z in fence.zones] == [
        ("qgc-polygon-0", True), ("qgc-polygon-1", False), ("qgc-circle-0", False)]
    for zone in fence.zones:  # QGC has neither bands nor actions
        assert (zone.floor_m, zone.ceiling_m, zone.action, zone.priority) == (
            -math.inf, math.inf, "report", 0)
    # Vertex [-35.3600, 149.1610] of polygon 0: pymap3d at the origin's altitude agrees to
    # a millimetre (the vertex sits on the ENU plane, ~2 cm below that altitude here) ...
    xy = np.asarray(fence.zone("qgc-polygon-0").shape.exterior.coords)
    expected = enu(-35.3600, 149.1610, HOME[2], HOME)
    nearest = xy[np.argmin(np.hypot(*(xy - expected[:2]).T))]
    np.testing.assert_allclose(nearest, expected[:2], atol=1e-3)
    # ... and exactly: the ENU plane point maps back to the file's lat/lon.
    lat, lon, _ = pymap3d.enu2geodetic(nearest[0], nearest[1], 0.0, *HOME)
    assert (lat, lon) == (pytest.approx(-35.3600, abs=1e-10), pytest.approx(149.1610, abs=1e-10))
    circle = fence.zone("qgc-circle-0").circle
    np.testing.assert_allclose(circle[:2], enu(-35.3645, 149.1630, HOME[2], HOME)[:2], atol=1e-3)
    assert circle[2] == 45.0


def test_plan_fixture_waypoints() -> None:
    _, waypoints = load_qgc_plan(DATA / "survey.plan")
    # Takeoff and a waypoint relative to home, a waypoint at 624 m AMSL; the speed change,
    # the survey, the land "here" (lat = lon = 0) and the RTL have no position.
    expected = [enu(-35.363261, 149.16523, HOME[2] + 30, HOME),
                enu(-35.3640, 149.1660, HOME[2] + 40, HOME),
                enu(-35.3610, 149.1640, 624.0, HOME)]
    np.testing.assert_allclose(waypoints, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(waypoints[0], (0.0, 0.0, 30.0), atol=1e-6)


def test_imported_fence_answers_contains() -> None:
    fence, waypoints = load_qgc_plan(json.dumps(plan_doc()))
    centre = enu(-35.3645, 149.1630, HOME[2], HOME)[:2]
    points = {
        "home": (enu(*HOME, HOME)[:2], True),
        "inside the building": (enu(-35.3620, 149.1666, HOME[2], HOME)[:2], False),
        "circle centre": (centre, False),
        "40 m north of the circle centre": (centre + np.array([0.0, 40.0]), False),
        "50 m north of the circle centre": (centre + np.array([0.0, 50.0]), True),
        "south of the fence": (enu(-35.3670, 149.1650, HOME[2], HOME)[:2], False),
    }
    got = fence.contains(np.array([p for p, _ in points.values()]))
    assert dict(zip(points, got.tolist(), strict=True)) == {k: v for k, (_, v) in points.items()}
    fence.check_points(np.array(waypoints), ["takeoff", "wp 2", "wp 4"])  # all allowed


def test_action_keyword_and_origin_argument() -> None:
    origin = (-35.3600, 149.1610, 600.0)
    fence, waypoints = load_qgc_plan(plan_doc(), origin=origin, action="return")
    assert fence.origin == origin
    assert {z.action for z in fence.zones} == {"return"}
    np.testing.assert_allclose(waypoints[0], enu(-35.363261, 149.16523, 614.0, origin),
                               atol=1e-9)
    with pytest.raises(GeofenceError, match="unknown breach action 'explode'"):
        load_qgc_plan(plan_doc(), action="explode")  # type: ignore[arg-type]


def test_origin_falls_back_to_the_first_fence_vertex() -> None:
    plan = plan_doc()
    del plan["mission"]["plannedHomePosition"]
    plan["mission"]["items"] = []
    fence, waypoints = load_qgc_plan(plan)
    assert fence.origin == (-35.3600, 149.1610, 0.0) and waypoints == []
    plan["geoFence"]["polygons"] = []
    assert load_qgc_plan(plan)[0].origin == (-35.3645, 149.1630, 0.0)  # the circle's centre
    plan["geoFence"]["circles"] = []
    fence, _ = load_qgc_plan(plan)
    assert fence.zones == () and fence.origin is None


def test_old_circles_without_a_version_and_a_plan_without_a_fence() -> None:
    plan = plan_doc()
    del plan["geoFence"]["circles"][0]["version"]  # as older QGC releases wrote circles
    assert load_qgc_plan(plan)[0].zone("qgc-circle-0").circle[2] == 45.0
    del plan["geoFence"]
    fence, waypoints = load_qgc_plan(plan)
    assert fence.zones == () and len(waypoints) == 3


def edit(path: str, value: object) -> dict[str, Any]:
    """The fixture plan with the value at a "/"-separated path replaced (None deletes)."""
    plan = plan_doc()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split("/")]
    node: Any = plan
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return plan


@pytest.mark.parametrize(("plan", "words"), [
    (edit("fileType", "Mission"), ["not a QGroundControl plan", "fileType is 'Mission'"]),
    (edit("version", 2), ["plan version 2 is not supported (only 1)"]),
    (edit("geoFence/version", 1), ["geoFence version 1 is not supported (only 2)"]),
    (edit("geoFence/version", None), ["geoFence version None is not supported"]),
    (edit("geoFence/polygons/1/version", 3),
     ["geoFence polygon 1", "polygon version 3 is not supported (only 1)"]),
    (edit("geoFence/polygons/1/version", None), ["geoFence polygon 1", "version None"]),
    (edit("geoFence/circles/0/version", 2), ["geoFence circle 0", "circle version 2"]),
    (edit("mission/version", 1), ["mission version 1 is not supported (only 2)"]),
    (edit("geoFence/polygons", {}), ["geoFence 'polygons' must be a list"]),
    (edit("geoFence/polygons/0/inclusion", "true"),
     ["geoFence polygon 0", "'inclusion' must be true or false"]),
    (edit("geoFence/polygons/0/polygon/1", [95.0, 149.1695]),
     ["geoFence polygon 0", "vertex 1", "invalid coordinates"]),
    (edit("geoFence/polygons/0/polygon/1", [-35.36]),
     ["geoFence polygon 0", "vertex 1 must be [lat, lon]"]),
    (edit("geoFence/polygons/0/polygon", [[-35.3600, 149.1610], [-35.3665, 149.1695],
                                          [-35.3600, 149.1695], [-35.3665, 149.1610]]),
     ["geoFence polygon 0", "zone 'qgc-polygon-0'", "not simple"]),
    (edit("geoFence/circles/0/circle/radius", None), ["geoFence circle 0", "'circle' must be"]),
    (edit("geoFence/circles/0/circle/radius", 0),
     ["geoFence circle 0", "'qgc-circle-0'", "radius must be positive"]),
    (edit("mission/items/1/frame", 10), ["mission item 1", "altitude frame 10 is not supported"]),
    (edit("mission/items/1/params", [0, 0, 0, 0]), ["mission item 1", "'params' must be"]),
    (edit("mission/items/3/params/4", -95.0), ["mission item 3", "invalid coordinates"]),
    (edit("mission/plannedHomePosition", None),
     ["mission item 0", "relative to home but the plan has no plannedHomePosition"]),
    (edit("mission/plannedHomePosition", [-35.36, 149.16]), ["plannedHomePosition"]),
])
def test_plan_errors_name_the_item_and_the_fault(plan: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(GeofenceError) as err:
        load_qgc_plan(plan)
    for word in words:
        assert word in str(err.value), str(err.value)
