"""The planner node on a real bus: fence, mission and estimate in; path and corridor out;
re-planning only when a fence change touches the route."""

from __future__ import annotations

import numpy as np
from shapely.geometry import LineString, Point

from fleetbus.messages import (
    Corridor,
    Event,
    Header,
    Mission,
    Odometry,
    Path,
    Pose,
    Vector3,
    Waypoint,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.nodes.planner import PlannerNode
from fleetbus.planners import Geofence, Zone
from tests.helpers import run_on, wait_until

FENCE = Geofence([
    Zone.polygon("yard", [(0, 0), (200, 0), (200, 200), (0, 200)]),
    Zone.polygon("shed", [(80, -10), (120, -10), (120, 150), (80, 150)], inclusion=False),
])


def planner_and_operator(bus) -> tuple[PlannerNode, object, dict[str, list]]:
    """A car's planner, and an operator node that feeds it and records what it says once
    every link between the two is up."""
    got: dict[str, list] = {"path": [], "corridor": [], "events": []}

    def operator(node):
        node.links = [node.subscribe("/car1/path", Path, got["path"].append),
                      node.subscribe("/car1/corridor", Corridor, got["corridor"].append),
                      node.subscribe("/events", Event, got["events"].append)]
        node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)
        node.mission = node.publisher("/car1/mission", Mission, latched=True)
        node.odom = node.publisher("/car1/odometry", Odometry)

    op = bus.node("operator", operator)
    planner = bus.start(PlannerNode("planner", params={"vehicle_id": "car1",
                                                       "vehicle_type": "car"}))
    wait_until(lambda: op.odom.subscribers and op.fence.subscribers and op.mission.subscribers
               and all(s.publishers for s in op.links), what="the planner's links")
    return planner, op, got


def test_the_planner_routes_a_mission_inside_the_fence_and_replans_when_it_must(bus):
    planner, op, got = planner_and_operator(bus)
    run_on(op, lambda: op.fence.publish(fence_to_msg(FENCE)))
    run_on(op, lambda: op.mission.publish(Mission(mission_id="m1", vehicle_id="car1", waypoints=[
        Waypoint(position=Vector3(x=180.0, y=20.0))])))
    run_on(op, lambda: op.odom.publish(Odometry(header=Header(stamp_ns=planner.now_ns()),
                                                pose=Pose(position=Vector3(x=20.0, y=20.0)))))
    wait_until(lambda: got["path"] and got["corridor"], what="a path and a corridor")

    path = got["path"][-1]
    xy = np.array([(p.position.x, p.position.y) for p in path.poses])
    assert np.allclose(xy[0], (20, 20)) and np.allclose(xy[-1], (180, 20), atol=1e-6)
    line = LineString(xy)
    margin = planner.envelope.margin_m
    assert FENCE.signed_distance(xy).min() >= margin * (1 - 1e-6)  # never nearer than that
    assert line.length > 2 * 150  # around the shed, not through it
    assert len(path.speeds_mps) == len(path.poses) and path.speeds_mps[-1] == 0.0
    assert max(path.speeds_mps) <= planner.envelope.max_speed_mps
    cells = got["corridor"][-1].cells
    assert len(cells) >= 2
    inside = np.zeros(len(xy), bool)
    for cell in cells:
        a = np.c_[cell.a_x, cell.a_y]
        assert np.allclose(np.hypot(a[:, 0], a[:, 1]), 1.0)
        inside |= np.all(xy @ a.T <= np.asarray(cell.b) + 1e-6, axis=1)
    assert inside.all()  # the corridor holds the whole smoothed path
    planned = next(e for e in got["events"] if e.kind == "planned")
    assert line.length <= float(planned.data["length_m"]) + 1e-6  # fillets cut corners

    # A buoy far from the route: the route stays (still the shortest), nothing re-published.
    paths_before = len(got["path"])
    far = FENCE.with_zone(Zone.circle_zone("buoy", (20, 180), 5, inclusion=False))
    run_on(op, lambda: op.fence.publish(fence_to_msg(far)))
    wait_until(lambda: any(e.kind == "route_kept" for e in got["events"]), what="route kept")
    assert len(got["path"]) == paths_before and planner.plans == 1

    # A zone across the route: a new route, around it.
    across = far.with_zone(Zone.circle_zone("pen", (100, 165), 8, inclusion=False))
    run_on(op, lambda: op.fence.publish(fence_to_msg(across)))
    wait_until(lambda: planner.plans == 2 and len(got["path"]) > paths_before,
               what="a new route")
    xy2 = np.array([(p.position.x, p.position.y) for p in got["path"][-1].poses])
    assert LineString(xy2).distance(Point(100, 165)) >= 8 + margin - 1e-6


def test_a_mission_point_outside_the_fence_is_refused_by_name(bus):
    planner, op, got = planner_and_operator(bus)
    events = got["events"]
    run_on(op, lambda: op.fence.publish(fence_to_msg(FENCE)))
    run_on(op, lambda: op.mission.publish(Mission(mission_id="m2", waypoints=[
        Waypoint(position=Vector3(x=100.0, y=50.0)), Waypoint(position=Vector3(x=300.0))])))
    run_on(op, lambda: op.odom.publish(Odometry(pose=Pose(position=Vector3(x=20.0, y=20.0)))))
    failed = wait_until(lambda: [e for e in events if e.kind == "plan_failed"], what="refusal")
    assert "waypoint 0" in failed[0].message and "'shed'" in failed[0].message
    assert "waypoint 1" in failed[0].message and "outside every inclusion zone" in failed[
        0].message
    assert planner.counters["invalid_mission"] == 1 and planner.plans == 0


def test_a_mission_to_where_the_vehicle_is_becomes_an_empty_path_a_hold(bus):
    _, op, got = planner_and_operator(bus)
    run_on(op, lambda: op.fence.publish(fence_to_msg(FENCE)))
    run_on(op, lambda: op.mission.publish(Mission(mission_id="hold", waypoints=[
        Waypoint(position=Vector3(x=20.2, y=19.9))])))
    run_on(op, lambda: op.odom.publish(Odometry(pose=Pose(position=Vector3(x=20.0, y=20.0)))))
    path = wait_until(lambda: got["path"], what="the hold path")[-1]
    corridor = wait_until(lambda: got["corridor"], what="its corridor")[-1]
    assert path.poses == [] and corridor.cells == []
    assert path.header.stamp_ns == corridor.header.stamp_ns  # the pair the controller takes
    assert not [e for e in got["events"] if e.kind == "plan_failed"]
