"""Missions as a library: GeoJSON files read and placed around the geofence's origin, inline
ENU lists, every malformed input refused with the file, feature and field named; and the
tracker deciding which waypoint is next, holds, passing corners, the way home and
completion."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleetbus.messages import Mission, Vector3, Waypoint
from fleetbus.missions import MissionError, MissionTracker, enu_mission, load_mission, read_mission
from fleetbus.planners import GeofenceError
from fleetbus.planners.geojson import plane_xy

DATA = Path(__file__).resolve().parent / "data" / "missions"
DRONE = DATA / "drone_survey.geojson"
CAR = DATA / "car_quay.geojson"
ORIGIN = (54.32, 10.14, 5.0)  # the files' "fleetbus:origin"


def xyz(w: Waypoint) -> list[float]:
    return [w.position.x, w.position.y, w.position.z]


def drone_doc() -> dict[str, Any]:
    return json.loads(DRONE.read_text())


# -- GeoJSON ----------------------------------------------------------------------------------


def test_a_drone_survey_is_ordered_by_seq_with_its_altitudes_and_settings():
    mission = load_mission(DRONE)
    assert (mission.mission_id, mission.vehicle_id, mission.return_home) == (
        "harbour-survey", "drone1", True)
    # The file lists seq 3, 1, 2, 4; the mission flies 1, 2, 3, 4. ENU to 1 cm (the file's
    # coordinates are rounded to 1e-8 degrees).
    expected = [(0, 100, 15), (100, 100, 15), (0, -80, 20), (100, -80, 25)]
    np.testing.assert_allclose([xyz(w) for w in mission.waypoints], expected, atol=0.01)
    first, _, third, fourth = mission.waypoints
    assert first.speed_mps == 3.0 and first.hold_s == 0.0 and first.yaw_rad is None
    assert third.hold_s == 5.0 and third.yaw_rad == pytest.approx(math.pi)
    assert fourth.acceptance_radius_m == 2.0  # and alt_m gave its altitude: 25 m above
    assert first.acceptance_radius_m == 1.0  # the Waypoint default


def test_a_car_route_takes_its_line_properties_for_every_vertex():
    mission = load_mission(CAR)
    assert (mission.mission_id, mission.vehicle_id, mission.return_home) == (
        "quay-run", "car1", False)
    np.testing.assert_allclose([xyz(w) for w in mission.waypoints],
                               [(15, 0, 0), (40, 0, 0)], atol=0.01)
    assert all(w.speed_mps == 4.0 and w.acceptance_radius_m == 3.0 for w in mission.waypoints)


def test_the_origin_argument_wins_over_the_files_and_moves_the_waypoints():
    other = (54.321, 10.141, 0.0)
    mission = load_mission(CAR, origin=other)
    doc = json.loads(CAR.read_text())
    lon, lat = np.array(doc["features"][0]["geometry"]["coordinates"]).T
    np.testing.assert_allclose([xyz(w)[:2] for w in mission.waypoints],
                               plane_xy(lat, lon, other), atol=1e-9)
    assert mission.waypoints[0].position.y == pytest.approx(-111.3, abs=0.5)


def test_a_mission_without_an_origin_is_read_but_not_placed_without_one(tmp_path):
    doc = drone_doc()
    del doc["fleetbus:origin"]
    path = tmp_path / "no-origin.geojson"
    path.write_text(json.dumps(doc))
    geo = read_mission(path)  # a node can check it before the fence arrives
    with pytest.raises(MissionError, match=r"no-origin\.geojson.*'fleetbus:origin'.*geofence"):
        geo.to_mission()
    placed = geo.to_mission(ORIGIN)
    assert xyz(placed.waypoints[0]) == pytest.approx(xyz(load_mission(DRONE).waypoints[0]))


def test_documents_text_and_ids():
    doc = drone_doc()
    del doc["fleetbus:mission"]
    from_dict = load_mission(doc)
    assert from_dict.mission_id == "mission" and from_dict.vehicle_id == ""
    assert not from_dict.return_home
    assert load_mission(json.dumps(doc)).mission_id == "mission"
    single = copy.deepcopy(json.loads(CAR.read_text())["features"][0])  # a lone Feature
    assert len(load_mission(single, ORIGIN).waypoints) == 2


def test_the_id_defaults_to_the_files_name(tmp_path):
    doc = drone_doc()
    del doc["fleetbus:mission"]["id"]
    path = tmp_path / "north-pier.geojson"
    path.write_text(json.dumps(doc))
    assert load_mission(path).mission_id == "north-pier"
    assert load_mission(str(path)).mission_id == "north-pier"


def _set(path: list, value: Any):
    def change(doc: dict) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _point(seq: Any, **props: Any) -> dict:
    return {"type": "Feature", "properties": {"seq": seq, **props},
            "geometry": {"type": "Point", "coordinates": [10.14, 54.32, 10]}}


def _line() -> dict:
    return {"type": "Feature", "properties": {},
            "geometry": {"type": "LineString", "coordinates": [[10.14, 54.32], [10.141, 54.32]]}}


# Each: what is changed in the drone file, and what the error must say besides the file name.
BAD = {
    "negative speed": (_set(["features", 1, "properties", "speed_mps"], -1),
                       ["feature 1 (seq 1)", "'speed_mps'", ">= 0"]),
    "zero radius": (_set(["features", 2, "properties", "acceptance_radius_m"], 0),
                    ["feature 2 (seq 2)", "'acceptance_radius_m'", "> 0"]),
    "hold as text": (_set(["features", 0, "properties", "hold_s"], "5"),
                     ["feature 0 (seq 3)", "'hold_s'", "finite number"]),
    "yaw as text": (_set(["features", 0, "properties", "yaw_deg"], "south"),
                    ["feature 0 (seq 3)", "'yaw_deg'"]),
    "altitude as text": (_set(["features", 3, "properties", "alt_m"], "high"),
                         ["feature 3 (seq 4)", "'alt_m'"]),
    "no seq": (_set(["features", 2, "properties"], {}), ["feature 2", "integer property 'seq'"]),
    "seq as text": (_set(["features", 2, "properties", "seq"], "2"), ["feature 2", "'seq'"]),
    "same seq": (_set(["features", 2, "properties", "seq"], 1),
                 ["features 1 and 2", "same 'seq' 1"]),
    "latitude off the globe": (_set(["features", 1, "geometry", "coordinates"], [10.14, 95.0]),
                               ["feature 1 (seq 1)", "invalid coordinates"]),
    "position not numbers": (_set(["features", 1, "geometry", "coordinates"], ["a", "b"]),
                             ["feature 1 (seq 1)", "[lon, lat]"]),
    "a polygon": (_set(["features", 3, "geometry"], {"type": "Polygon", "coordinates": []}),
                  ["feature 3", "unsupported geometry type 'Polygon'"]),
    "not a feature": (_set(["features", 1], {"type": "Point"}), ["feature 1", "not a GeoJSON"]),
    "line and points": (_set(["features", 4], _line()), ["mixes a LineString (feature 4)"]),
    "no features": (_set(["features"], []), ["has no waypoints"]),
    "unknown mission key": (_set(["fleetbus:mission", "return-home"], True),
                            ["'fleetbus:mission'", "unknown keys ['return-home']"]),
    "return_home as text": (_set(["fleetbus:mission", "return_home"], "yes"),
                            ["'return_home' must be a bool"]),
    "mission member not an object": (_set(["fleetbus:mission"], [1]),
                                     ["'fleetbus:mission' must be an object"]),
    "bad origin": (_set(["fleetbus:origin"], {"lat_deg": 54.0}), ["'fleetbus:origin'"]),
    "not a collection": (_set(["type"], "GeometryCollection"),
                         ["FeatureCollection or a Feature"]),
}


@pytest.mark.parametrize("change, fragments", BAD.values(), ids=BAD.keys())
def test_malformed_missions_are_refused_naming_the_file_feature_and_field(
        tmp_path, change, fragments):
    doc = drone_doc()
    doc["features"].append(_point(9))  # so that index 4 exists to be replaced
    change(doc)
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(MissionError) as info:
        load_mission(path)
    message = str(info.value)
    assert message.startswith(f"mission file {str(path)!r}: "), message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)


def test_two_lines_are_refused():
    doc = {"type": "FeatureCollection", "features": [_line(), _line()]}
    with pytest.raises(MissionError, match=r"mission document: has 2 LineString features"):
        load_mission(doc, ORIGIN)


def test_unreadable_files_are_refused_by_name(tmp_path):
    with pytest.raises(MissionError, match=r"cannot read mission file '.*nowhere\.geojson'"):
        read_mission(tmp_path / "nowhere.geojson")
    broken = tmp_path / "broken.geojson"
    broken.write_text("{ not json")
    with pytest.raises(MissionError, match=r"mission file '.*broken\.geojson' is not valid"):
        read_mission(broken)
    with pytest.raises(GeofenceError, match="origin"):  # a MissionError is a GeofenceError
        load_mission(CAR, origin=(95.0, 0.0, 0.0))


# -- inline ENU -------------------------------------------------------------------------------


def test_inline_waypoints_become_a_mission():
    mission = enu_mission([{"x": 1, "y": 2}, {"x": 3.5, "y": -4, "z": 10, "speed_mps": 2,
                                              "acceptance_radius_m": 0.5, "hold_s": 3,
                                              "yaw_rad": 1.0}],
                          mission_id="m1", vehicle_id="drone1", return_home=True)
    assert (mission.mission_id, mission.vehicle_id, mission.return_home) == ("m1", "drone1", True)
    assert [xyz(w) for w in mission.waypoints] == [[1, 2, 0], [3.5, -4, 10]]
    second = mission.waypoints[1]
    assert (second.speed_mps, second.acceptance_radius_m, second.hold_s, second.yaw_rad) == (
        2.0, 0.5, 3.0, 1.0)


@pytest.mark.parametrize("waypoints, match", [
    ([], "non-empty list"),
    ("x=1", "non-empty list"),
    ([{"x": 1, "y": 2}, {"x": 1}], "waypoint 1: needs y"),
    ([{"x": 1, "y": 2, "speed": 3}], r"waypoint 0: unknown fields \['speed'\]"),
    ([{"x": 1, "y": 2, "hold_s": -1}], r"waypoint 0: field 'hold_s' must be >= 0"),
    ([{"x": "1", "y": 2}], r"waypoint 0: field 'x' must be a finite number"),
    ([{"x": float("nan"), "y": 2}], r"field 'x' must be a finite number"),
    ([[1, 2]], "waypoint 0: must be a mapping"),
])
def test_bad_inline_waypoints_are_refused_by_index(waypoints, match):
    with pytest.raises(MissionError, match=match):
        enu_mission(waypoints)


# -- the tracker ------------------------------------------------------------------------------


def mission_of(*points: tuple, return_home: bool = False, **common: Any) -> Mission:
    return Mission(mission_id="m", return_home=return_home, waypoints=[
        Waypoint(position=Vector3(x=p[0], y=p[1], z=p[2] if len(p) > 2 else 0.0), **common)
        for p in points])


def test_waypoints_are_reached_in_order_and_completion_needs_a_stop():
    tracker = MissionTracker(mission_of((10, 0), (10, 10)))
    tracker.restart((0, 0, 0))
    assert tracker.update((5, 0, 0), 2.0, 1.0).arrived == ()
    assert tracker.distance((5, 0, 0)) == pytest.approx(5.0)
    step = tracker.update((9.5, 0.5, 7.0), 2.0, 2.0)  # a car: altitude does not matter
    assert step.arrived == (0,) and tracker.index == 1 and not step.completed
    step = tracker.update((10.2, 9.8, 0), 1.0, 3.0)
    assert step.arrived == (1,) and not step.completed and not tracker.completed
    assert tracker.update((10.1, 9.9, 0), 0.5, 4.0).arrived == ()  # not again
    assert not tracker.update((10.5, 11.8, 0), 0.0, 5.0).completed  # stopped past it
    step = tracker.update((10.0, 10.0, 0), 0.1, 6.0)
    assert step.completed and tracker.completed and tracker.index == 2
    assert not tracker.update((10.0, 10.0, 0), 0.0, 7.0).completed  # reported once


def test_a_drone_must_reach_a_waypoint_in_three_dimensions():
    tracker = MissionTracker(mission_of((0, 0, 10), (20, 0, 10)), three_d=True)
    tracker.restart((0, 0, 0))
    assert tracker.update((0, 0, 5), 0.0, 1.0).arrived == ()  # right below it
    assert tracker.update((0.2, 0, 9.5), 0.5, 2.0).arrived == (0,)


def test_several_waypoints_within_reach_are_reached_in_one_update():
    tracker = MissionTracker(mission_of((1, 0), (1.5, 0), (8, 0)))
    tracker.restart((0, 0, 0))
    assert tracker.update((1.2, 0, 0), 1.0, 1.0).arrived == (0, 1)
    assert tracker.index == 2


def test_a_cut_corner_counts_once_passed_but_never_a_hold_or_the_last_goal():
    # The planner rounds the corner at (20, 0) by more than its 1 m radius.
    tracker = MissionTracker(mission_of((20, 0), (20, 20)))
    tracker.restart((0, 0, 0))
    assert tracker.update((18, 2.5, 0), 3.0, 1.0).arrived == ()  # not yet past it
    assert tracker.update((20.5, 3.0, 0), 3.0, 2.0).arrived == (0,)  # past the square line
    assert tracker.update((22, 22, 0), 3.0, 3.0).arrived == ()  # the last: only its radius
    held = MissionTracker(mission_of((20, 0), (20, 20), hold_s=1.0))
    held.restart((0, 0, 0))
    assert held.update((21.5, 3.0, 0), 3.0, 1.0).arrived == ()
    # A resumed leg measures the first goal's line from where it resumed.
    resumed = MissionTracker(mission_of((20, 0), (20, 20)))
    resumed.restart((40, 0, 0))  # coming from the east now
    assert resumed.update((19, 3, 0), 3.0, 1.0).arrived == (0,)


def test_a_hold_is_timed_by_the_stamps_and_starts_again_when_the_vehicle_leaves():
    mission = mission_of((10, 0), (20, 0), (30, 0))
    mission.waypoints[0].hold_s = 5.0  # only the first one holds
    tracker = MissionTracker(mission)
    tracker.restart((0, 0, 0))
    assert [xyz(w) for w in tracker.leg()] == [[10, 0, 0]]  # plan up to the hold only
    assert tracker.update((10, 0, 0), 0.0, 100.0).arrived == (0,)
    assert not tracker.update((10, 0, 0), 0.0, 104.0).new_leg
    tracker.update((12, 0, 0), 0.0, 104.5)  # pushed out of the radius: the hold restarts
    assert not tracker.update((10, 0, 0), 0.0, 106.0).new_leg
    assert not tracker.update((10, 0, 0), 0.0, 110.9).new_leg
    step = tracker.update((10, 0, 0), 0.0, 111.0)
    assert step.new_leg and step.arrived == () and tracker.index == 1
    assert [xyz(w) for w in tracker.leg()] == [[20, 0, 0], [30, 0, 0]]


def test_the_way_home_is_the_last_goal_and_not_a_waypoint():
    tracker = MissionTracker(mission_of((10, 0), return_home=True, acceptance_radius_m=2.0),
                             home=(-5, 0, 0))
    tracker.restart((-5, 0, 0))
    assert tracker.waypoints == 1 and len(tracker.goals) == 2
    assert tracker.goals[1].acceptance_radius_m == 2.0
    assert [xyz(w) for w in tracker.leg()] == [[10, 0, 0], [-5, 0, 0]]
    tracker.update((10, 0, 0), 2.0, 1.0)
    assert tracker.returning and tracker.index == 1
    assert tracker.target.position.x == -5
    step = tracker.update((-4, 0, 0), 0.0, 2.0)
    assert step.arrived == (1,) and step.completed and not tracker.returning
    with pytest.raises(ValueError, match="home"):
        MissionTracker(mission_of((10, 0), return_home=True))
    with pytest.raises(ValueError, match="no waypoints"):
        MissionTracker(Mission(mission_id="empty"))
