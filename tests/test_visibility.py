"""The lazy visibility-graph A* against an independent brute force (Dijkstra over the full
visibility graph, tests/worlds.py) on random polygonal worlds, and the cases with no path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from fleetbus.planners import Geofence, PlanResult, VisibilityPlanner, Zone
from tests.worlds import INSIDE, ON_EDGE, World, brute_force, disc_world, worlds

REL_TOL = 1e-6
PATH_SLACK_M = 1e-6


def check_against_brute_force(free, start, goal) -> PlanResult:
    """Plan, and assert what the brute force says: the same status and, for a path, the
    same length, a polyline from start to goal inside the free space."""
    ours = VisibilityPlanner(free).plan(start, goal)
    ref = brute_force(free, start, goal)
    assert ours.status == ref.status, (
        f"planner: {ours.status} ({ours.message}); brute force: {ref.status} "
        f"{ref.length_m:.9f} m via {None if ref.points is None else ref.points.tolist()}")
    if not ours.ok:
        assert ours.message
        return ours
    assert abs(ours.length_m - ref.length_m) <= REL_TOL * max(ref.length_m, 1e-3), (
        f"planner {ours.length_m:.9f} m via {ours.points.tolist()}; brute force "
        f"{ref.length_m:.9f} m via {ref.points.tolist()}")
    assert np.array_equal(ours.points[0], start)
    assert np.array_equal(ours.points[-1], goal)
    steps = np.hypot(*np.diff(ours.points, axis=0).T)
    assert ours.length_m == pytest.approx(steps.sum(), rel=1e-12, abs=1e-12)
    if len(ours.points) > 1:
        assert free.buffer(PATH_SLACK_M).covers(LineString(ours.points))
    return ours


def check_world(world: World) -> None:
    free = world.free()
    if free.is_empty:  # the exclusions and the margin cover the whole area
        with pytest.raises(ValueError, match="empty"):
            VisibilityPlanner(free)
        return
    check_against_brute_force(free, world.start, world.goal)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(INSIDE))
def test_random_worlds_match_brute_force(world: World) -> None:
    """Start and goal inside the free space (or blocked), never equal."""
    check_world(world)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(ON_EDGE))
def test_random_worlds_with_ends_on_the_boundary_match_brute_force(world: World) -> None:
    """Start or goal exactly on the free space's boundary (where a vehicle holding the
    margin is, and every bend of a planned path) or on a vertex, sometimes both equal."""
    check_world(world)


@pytest.mark.parametrize("seed", [0, 2, 3, 4, 5, 6, 7, 9])  # 1 and 8 go straight
def test_scattered_zones_match_brute_force(seed: int) -> None:
    """Eight convex zones between start and goal, apart by more than twice the margin:
    many routes of nearly the same length, so a search that is not exact picks a wrong
    one (an A* heuristic 1.5x too large fails most of these seeds)."""
    world = disc_world(seed, vertices=40, obstacles=8, radius_m=100.0, sizes_m=(8.0, 20.0),
                       margin_m=1.0)
    result = check_against_brute_force(world.free(), world.start, world.goal)
    assert len(result.points) > 2


# -- deterministic cases ---------------------------------------------------------------------

ROOM = box(0, 0, 100, 100)
PILLAR = box(40, 40, 60, 60)
WALL = box(48, -1, 52, 101)  # cuts the room in two


def test_straight_line_when_visible() -> None:
    result = check_against_brute_force(ROOM.difference(PILLAR), np.array([10.0, 10.0]),
                                       np.array([90.0, 20.0]))
    assert len(result.points) == 2
    assert result.length_m == pytest.approx(math.hypot(80, 10), rel=1e-12)


def test_detour_around_a_pillar_touches_its_corners() -> None:
    result = check_against_brute_force(ROOM.difference(PILLAR), np.array([10.0, 50.0]),
                                       np.array([90.0, 50.0]))
    assert result.length_m == pytest.approx(2 * math.hypot(30, 10) + 20, rel=1e-9)
    corners = {(40.0, 60.0), (60.0, 60.0), (40.0, 40.0), (60.0, 40.0)}
    assert {tuple(p) for p in result.points[1:-1].tolist()} <= corners


def test_symmetric_ties_still_give_the_optimum() -> None:
    """Start and goal on the axis of a row of pillars and a diamond: the diamond's corner
    on the axis is reached by two equally short paths, so A* breaks a tie there; the
    length must not depend on how."""
    pillars = [box(x, 45, x + 6, 55) for x in (20, 40, 60)]
    pillars.append(Polygon([(80, 40), (88, 50), (80, 60), (72, 50)]))
    free = ROOM.difference(shapely.union_all(pillars))
    check_against_brute_force(free, np.array([5.0, 50.0]), np.array([95.0, 50.0]))
    check_against_brute_force(free, np.array([30.0, 50.0]), np.array([95.0, 50.0]))


@pytest.mark.parametrize(("start", "goal", "status", "words"), [
    ((50, 50), (90, 90), "start_blocked", ("start (50.00, 50.00)", "obstacle")),
    ((10, 10), (41, 59), "goal_blocked", ("goal (41.00, 59.00)", "obstacle")),
    ((10, 10), (-5, 50), "goal_blocked", ("goal (-5.00, 50.00)", "not in free space")),
    ((10, math.nan), (90, 90), "start_blocked", ("start", "not finite")),
])
def test_blocked_ends_are_reported(start, goal, status, words) -> None:
    result = VisibilityPlanner(ROOM.difference(PILLAR)).plan(start, goal)
    assert (result.status, result.ok, len(result.points)) == (status, False, 0)
    assert math.isinf(result.length_m)
    for word in words:
        assert word in result.message


def test_a_wall_across_leaves_no_path() -> None:
    free = ROOM.difference(WALL)
    assert free.geom_type == "MultiPolygon"
    result = check_against_brute_force(free, np.array([10.0, 50.0]), np.array([90.0, 50.0]))
    assert result.status == "no_path"
    assert "cannot reach" in result.message


def test_an_inclusion_split_by_a_margin_leaves_no_path() -> None:
    """Two rooms joined by a 4 m door: a 1 m margin keeps it open, 3 m closes it."""
    rooms = Zone.polygon("rooms", [(0, 0), (100, 0), (100, 48), (52, 48), (52, 52),
                                   (100, 52), (100, 100), (0, 100), (0, 52), (48, 52),
                                   (48, 48), (0, 48)])
    fence = Geofence([rooms])
    start, goal = np.array([80.0, 20.0]), np.array([80.0, 80.0])
    assert check_against_brute_force(fence.free_space(1.0), start, goal).ok
    assert check_against_brute_force(fence.free_space(3.0), start, goal).status == "no_path"


def test_multipolygon_free_space_plans_within_each_part() -> None:
    left = box(0, 0, 40, 100).difference(box(10, 30, 30, 70))
    right = box(60, 0, 100, 100).difference(Point(80, 50).buffer(10))
    free = MultiPolygon([left, right])
    check_against_brute_force(free, np.array([20.0, 10.0]), np.array([20.0, 90.0]))
    check_against_brute_force(free, np.array([80.0, 10.0]), np.array([80.0, 90.0]))
    assert check_against_brute_force(free, np.array([20.0, 10.0]),
                                     np.array([80.0, 90.0])).status == "no_path"


def test_start_equal_to_goal_is_a_zero_length_path() -> None:
    """A vehicle already at its goal (here on a corner of the free space too)."""
    planner = VisibilityPlanner(ROOM.difference(PILLAR))
    for here in ((30.0, 30.0), (40.0, 60.0)):
        result = planner.plan(here, here)
        assert result.status == "ok", result.message
        assert result.length_m == 0.0


def test_replanning_from_a_waypoint_gives_the_rest_of_the_plan() -> None:
    """Every bend of a shortest path is on the free space's boundary; a vehicle that
    replans from one (or towards one) must get the rest of the same path (Bellman)."""
    fence = Geofence([Zone.polygon("area", [(0, 0), (100, 0), (100, 100), (0, 100)]),
                      Zone.circle_zone("tower", (50, 50), 10, inclusion=False),
                      Zone.polygon("crane", [(20, 20), (30, 22), (25, 35)], inclusion=False)])
    planner = VisibilityPlanner(fence.free_space(2.0))
    start, goal = np.array([5.0, 50.0]), np.array([95.0, 52.0])
    path = planner.plan(start, goal)
    assert path.ok
    assert len(path.points) > 4  # it bends around the tower
    steps = np.hypot(*np.diff(path.points, axis=0).T)
    failures = []
    for k in range(1, len(path.points) - 1):
        rest = planner.plan(path.points[k], goal)
        before = planner.plan(start, path.points[k])
        for what, got, want in (("from", rest, steps[k:].sum()), ("to", before, steps[:k].sum())):
            if not (got.ok and abs(got.length_m - want) <= REL_TOL * want):
                failures.append(f"{what} waypoint {k}: {got.status} {got.length_m:.6f} m, "
                                f"want {want:.6f} m")
    assert not failures, "; ".join(failures)


def test_empty_free_space_is_refused() -> None:
    with pytest.raises(ValueError, match="margin leaves no room"):
        VisibilityPlanner(Polygon())
