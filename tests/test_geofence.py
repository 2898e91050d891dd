"""Geofence zones and the questions asked of them: validation by name, containment with
altitude bands and priorities, signed distance (against shapely in 2-D, against a
brute-force search in 3-D), time to breach, and the free space a planner gets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import Point

from fleetbus.planners import Geofence, GeofenceError, Zone
from fleetbus.planners.geofence import ERODE_QUAD_SEGS, ERODE_SCALE
from tests.worlds import INSIDE, World, outline, worlds

SQUARE = [(0, 0), (10, 0), (10, 10), (0, 10)]


def square(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# A fence with every feature: an inclusion with a ceiling, a circular no-fly zone up to
# 60 m, a school excluded at all heights with a higher-priority corridor through it, and
# a stadium excluded between 30 and 90 m.
FENCE = Geofence([
    Zone.polygon("area", [(0, 0), (100, 0), (100, 100), (60, 100), (50, 80), (40, 100),
                          (0, 100)], ceiling_m=120.0),
    Zone.circle_zone("tower", (30, 30), 10.0, inclusion=False, ceiling_m=60.0),
    Zone.polygon("school", square(60, 20, 85, 45), inclusion=False, action="land"),
    Zone.polygon("corridor", square(55, 30, 90, 35), ceiling_m=120.0, priority=1),
    Zone.polygon("stadium", [(20, 60), (45, 65), (30, 85)], inclusion=False, floor_m=30.0,
                 ceiling_m=90.0, action="hold"),
])


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("make", "words"), [
    (lambda: Zone.polygon("bowtie", [(0, 0), (10, 10), (10, 0), (0, 10)]),
     ["'bowtie'", "not simple", "Self-intersection"]),
    (lambda: Zone.polygon("band", SQUARE, floor_m=50.0, ceiling_m=10.0),
     ["'band'", "floor 50.0 m is not below its ceiling 10.0 m"]),
    (lambda: Zone.polygon("flat", SQUARE, floor_m=30.0, ceiling_m=30.0),
     ["'flat'", "floor 30.0 m is not below its ceiling 30.0 m"]),
    (lambda: Zone.polygon("nanfloor", SQUARE, floor_m=math.nan), ["'nanfloor'", "floor_m is NaN"]),
    (lambda: Zone.circle_zone("zero", (0, 0), 0.0), ["'zero'", "radius", "got 0.0"]),
    (lambda: Zone.circle_zone("negative", (0, 0), -5.0), ["'negative'", "radius", "got -5.0"]),
    (lambda: Zone.circle_zone("nanradius", (0, 0), math.nan), ["'nanradius'", "radius", "nan"]),
    (lambda: Zone.circle_zone("nancentre", (math.nan, 0), 5.0), ["'nancentre'", "centre"]),
    (lambda: Zone.polygon("nanvertex", [(0, 0), (10, math.nan), (10, 10)]),
     ["'nanvertex'", "outline vertex 1", "non-finite"]),
    (lambda: Zone.polygon("line", [(0, 0), (10, 0)]),
     ["'line'", "at least 3 distinct vertices, got 2"]),
    (lambda: Zone.polygon("repeats", [(0, 0), (10, 0), (0, 0), (10, 0)]),
     ["'repeats'", "at least 3 distinct vertices, got 2"]),
    (lambda: Zone.polygon("holey", SQUARE, holes=[[(1, 1), (2, 2)]]),
     ["'holey'", "hole 0", "at least 3"]),
    (lambda: Zone.polygon("loud", SQUARE, action="explode"),
     ["'loud'", "unknown breach action 'explode'", "report, hold, return, land"]),
    (lambda: Geofence([Zone.polygon("twin", SQUARE), Zone.circle_zone("twin", (5, 5), 1.0)]),
     ["'twin'", "used twice"]),
    (lambda: FENCE.free_space(-1.0), ["margin", "-1.0"]),
    (lambda: FENCE.free_space(math.nan), ["margin", "nan"]),
])
def test_invalid_zones_are_refused_by_name(make, words) -> None:
    with pytest.raises(GeofenceError) as info:
        make()
    for word in words:
        assert word in str(info.value)


def test_check_points_names_every_bad_point_and_its_zone() -> None:
    points = np.array([[30.0, 30.0, 10.0], [50.0, 10.0, 50.0], [150.0, 50.0, 50.0],
                       [50.0, 10.0, 200.0]])
    with pytest.raises(GeofenceError) as info:
        FENCE.check_points(points, ["start", "waypoint 1", "waypoint 2", "goal"])
    message = str(info.value)
    assert "start (30.0, 30.0, 10.0) lies inside exclusion zone 'tower'" in message
    assert "waypoint 2 (150.0, 50.0, 50.0) lies outside every inclusion zone" in message
    assert "goal (50.0, 10.0, 200.0) lies outside every inclusion zone" in message  # too high
    assert "waypoint 1" not in message
    FENCE.check_points(points[1:2], ["waypoint 1"])  # allowed: no error


def test_breach_zone_is_the_rule_broken() -> None:
    assert FENCE.breach_zone((50.0, 10.0, 50.0)) is None
    assert FENCE.breach_zone((70.0, 40.0, 50.0)).zone_id == "school"
    assert FENCE.breach_zone((30.0, 70.0, 50.0)).zone_id == "stadium"
    assert FENCE.breach_zone((30.0, 70.0, 10.0)) is None  # under the stadium's band
    assert FENCE.breach_zone((-5.0, 50.0)).zone_id == "area"


# -- contains ---------------------------------------------------------------------------------


def test_contains_in_2d_ignores_bands_and_counts_the_boundary() -> None:
    points = [(50, 10), (30, 30), (30, 70), (70, 40), (70, 32), (50, 90), (0, 50), (-1, 50)]
    assert FENCE.contains(np.array(points)).tolist() == [
        True, False, False, False, True, False, True, False]


@pytest.mark.parametrize(("point", "allowed", "why"), [
    ((30, 30, 59.0), False, "inside the tower's band"),
    ((30, 30, 60.0), False, "on the tower's ceiling: band edges count"),
    ((30, 30, 61.0), True, "above the tower's ceiling"),
    ((30, 70, 20.0), True, "under the stadium's floor"),
    ((30, 70, 30.0), False, "on the stadium's floor"),
    ((30, 70, 95.0), True, "above the stadium"),
    ((50, 10, 120.0), True, "on the area's ceiling"),
    ((50, 10, 121.0), False, "above the area's ceiling"),
    ((70, 40, 10.0), False, "in the school"),
    ((70, 32, 10.0), True, "in the corridor through the school (higher priority)"),
    ((70, 32, 130.0), False, "above the corridor is above the area"),
])
def test_contains_in_3d_follows_each_zones_band(point, allowed, why) -> None:
    assert FENCE.contains(np.array([point])).tolist() == [allowed], why


def test_equal_priority_goes_to_the_exclusion() -> None:
    def fence(corridor_priority: int) -> Geofence:
        return Geofence([
            Zone.polygon("area", square(0, 0, 100, 100)),
            Zone.polygon("school", square(40, 0, 60, 100), inclusion=False, priority=1),
            Zone.polygon("corridor", square(0, 45, 100, 55), priority=corridor_priority),
        ])

    p = np.array([[50.0, 50.0], [50.0, 20.0], [20.0, 50.0]])
    assert fence(2).contains(p).tolist() == [True, False, True]
    assert fence(1).contains(p).tolist() == [False, False, True]
    assert fence(0).contains(p).tolist() == [False, False, True]


@pytest.mark.parametrize("inclusion", [True, False])
def test_circles_are_conservative_and_close(inclusion: bool) -> None:
    """The polygon of an inclusion circle lies inside the true circle, that of an
    exclusion outside, and either is within 0.2 % of the radius."""
    r = 50.0
    zones = [Zone.circle_zone("circle", (10.0, -20.0), r, inclusion=inclusion)]
    if not inclusion:
        zones.append(Zone.polygon("area", square(-100, -100, 100, 100)))
    fence = Geofence(zones)
    theta = np.linspace(0, 2 * math.pi, 20_000)

    def ring(radius: float) -> np.ndarray:
        return np.stack([10 + radius * np.cos(theta), -20 + radius * np.sin(theta)], axis=1)

    just_inside, just_outside = ring(r * (1 - 1e-9)), ring(r * (1 + 1e-9))
    well_inside, well_outside = ring(r * (1 - 2e-3)), ring(r * (1 + 2e-3))
    if inclusion:
        assert not fence.contains(just_outside).any()
        assert fence.contains(well_inside).all()
        assert not fence.contains(just_inside).all()  # the polygon cuts inside the circle
    else:
        assert not fence.contains(just_inside).any()
        assert fence.contains(well_outside).all()
        assert not fence.contains(just_outside).all()


@pytest.mark.parametrize("fence", [
    FENCE,
    Geofence([Zone.polygon("pond", SQUARE, inclusion=False)]),
    Geofence([Zone.polygon("pond", SQUARE, inclusion=False, ceiling_m=10.0)]),
], ids=["with inclusion", "exclusion only", "exclusion with band"])
def test_nan_points_are_never_allowed(fence: Geofence) -> None:
    nan = math.nan
    assert not fence.contains(np.array([[nan, 50.0], [50.0, nan]])).any()
    assert not fence.contains(np.array([[nan, 50.0, 10.0], [50.0, 10.0, nan]])).any()


def test_without_inclusions_everything_outside_the_exclusions_is_allowed() -> None:
    fence = Geofence([Zone.polygon("pond", SQUARE, inclusion=False),
                      Zone.circle_zone("mast", (50, 50), 5.0, inclusion=False, ceiling_m=30.0)])
    points = np.array([[-5e4, 3e4, 0.0], [5.0, 5.0, 1e3], [50.0, 50.0, 20.0],
                       [50.0, 50.0, 40.0], [1e5, -1e5, -10.0]])
    assert fence.contains(points).tolist() == [True, False, False, True, True]
    assert fence.contains(points[:, :2]).tolist() == [True, False, False, False, True]


# -- signed distance -----------------------------------------------------------------------


def _points(dims: int, n: int = 40) -> st.SearchStrategy[np.ndarray]:
    coord = st.floats(-20.0, 120.0)
    return arrays(np.float64, (n, dims), elements=coord)


@settings(max_examples=60, deadline=None)
@given(_points(2))
def test_signed_distance_2d_is_shapelys_distance_to_the_region_boundary(pts) -> None:
    sd = FENCE.signed_distance(pts)
    inside = FENCE.contains(pts)
    assert np.array_equal(np.signbit(sd), ~inside)  # -0.0 only outside
    reference = shapely.distance(FENCE.region().boundary, shapely.points(pts))
    np.testing.assert_allclose(np.abs(sd), reference, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(_points(3))
def test_signed_distance_3d_sign_agrees_with_contains(pts) -> None:
    sd = FENCE.signed_distance(pts)
    inside = FENCE.contains(pts)
    assert np.array_equal(np.signbit(sd), ~inside)  # -0.0 only outside


def _fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = math.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def test_signed_distance_3d_matches_a_brute_force_search() -> None:
    """|d| is the distance to the nearest point of the other kind (allowed/forbidden):
    the ball of radius 0.999|d| around p holds none, the one of radius 1.02|d| does
    (searched along 8 000 directions)."""
    rng = np.random.default_rng(7)
    sphere = _fibonacci_sphere(8_000)
    pts = np.column_stack([rng.uniform(-10, 110, (30, 2)), rng.uniform(-10, 140, 30)])
    for p, d, kind in zip(pts, FENCE.signed_distance(pts), FENCE.contains(pts), strict=True):
        assert d != 0.0  # not on the boundary: then there is a ball to search
        ball = np.concatenate([p + s * abs(d) * sphere for s in (0.5, 0.9, 0.999)])
        assert np.all(FENCE.contains(ball) == kind), f"{p}: something nearer than {d}"
        shell = p + 1.02 * abs(d) * sphere
        assert not np.all(FENCE.contains(shell) == kind), f"{p}: nothing within {d}"


@pytest.mark.parametrize(("point", "expected"), [
    ((5, 5, 60), 10.0),  # above the zone's ceiling
    ((13, 5, 20), 3.0),  # beside it
    ((13, 5, 54), 5.0),  # diagonal from its top edge: hypot(3, 4)
    ((13, 14, 54), math.sqrt(9 + 16 + 16)),  # diagonal from its top corner
    ((5, 5, -2), 2.0),  # below its floor
    ((5, 5, 40), -5.0),  # inside: nearest is a side
    ((5, 5, 49), -1.0),  # inside: nearest is the ceiling
    ((5, 5, 50), 0.0),  # on the ceiling
])
def test_signed_distance_3d_around_a_box_zone(point, expected) -> None:
    fence = Geofence([Zone.polygon("box", SQUARE, inclusion=False, floor_m=0.0,
                                   ceiling_m=50.0)])
    assert fence.signed_distance(np.array([point]))[0] == pytest.approx(expected, abs=1e-12)


def test_signed_distance_3d_under_an_inclusion_ceiling() -> None:
    fence = Geofence([Zone.polygon("area", square(0, 0, 100, 100), ceiling_m=100.0)])
    pts = np.array([[50, 50, 90], [50, 95, 90], [50, 50, 103], [104, 50, 103], [50, 50, -1e4]])
    np.testing.assert_allclose(fence.signed_distance(pts), [10, 5, -3, -5, 50], atol=1e-12)


# -- time to breach ---------------------------------------------------------------------------

OPEN = Geofence([
    Zone.polygon("area", square(0, 0, 100, 100)),
    Zone.polygon("block", square(60, 40, 70, 60), inclusion=False),
    Zone.polygon("nofly", square(10, 10, 30, 30), inclusion=False, floor_m=50.0,
                 ceiling_m=80.0),
])


@pytest.mark.parametrize(("position", "velocity", "expected"), [
    ((50, 50), (2, 0), 5.0),  # towards the block's west face, 10 m away
    ((50, 20), (2, 0), 25.0),  # towards the east edge, 50 m away
    ((50, 20), (-3, 4), 50 / 3),  # diagonally, past the no-fly zone to the west edge
    ((50, 20), (3, 4), 5.0),  # diagonally into the block's south face at (65, 40)
    ((50, 20, 10), (-1, 0, 0), 50.0),  # beneath the no-fly band, on to the west edge
    ((20, 20, 20), (0, 0, 3), 10.0),  # climbing into the no-fly floor at 50 m
    ((20, 20, 100), (0, 0, -2), 10.0),  # descending onto its ceiling at 80 m
    ((40, 20, 60), (-1, 0, 0), 10.0),  # level, into its side
    ((40, 20, 45), (-1, 0, 0.5), 10.0),  # climbing and closing: reaches x = 30 at z = 50
    ((20, 20, 0.0), (0, 0, 0.1), 500.0),  # a slow climb into the floor
    ((20, 20, 12.18), (0, 0, 4.68), (50.0 - 12.18) / 4.68),  # z0 + v t rounds below 50
])
def test_time_to_breach_straight_line(position, velocity, expected) -> None:
    assert OPEN.time_to_breach(position, velocity, 1e3) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(z0=st.floats(0.0, 49.0), rate=st.floats(0.05, 20.0))
def test_time_to_breach_climbing_into_a_band(z0: float, rate: float) -> None:
    """A vertical climb under the no-fly zone reaches its floor after gap / rate."""
    expected = (50.0 - z0) / rate
    got = OPEN.time_to_breach((20.0, 20.0, z0), (0.0, 0.0, rate), 2 * expected)
    assert got == pytest.approx(expected, rel=1e-9)


def test_time_to_breach_outside_is_zero_and_staying_inside_is_inf() -> None:
    assert OPEN.time_to_breach((65, 50), (1, 0), 100.0) == 0.0  # in the block
    assert OPEN.time_to_breach((20, 20, 60), (0, 0, 0), 100.0) == 0.0  # in the no-fly band
    assert OPEN.time_to_breach((50, 50), (2, 0), 4.0) == math.inf  # breach after 5 s
    assert OPEN.time_to_breach((50, 20), (0, 0), 100.0) == math.inf  # hovering
    assert OPEN.time_to_breach((5, 20, 90), (1, 0, 0), 80.0) == math.inf  # over the zone


# -- free space --------------------------------------------------------------------------------


def _margin_shortfall(fence: Geofence, free, margin: float) -> float:
    """The worst relative shortfall of the clearance of the free space's boundary
    (densified: the nearest points lie along its edges too) below the margin."""
    if free.is_empty:
        return 0.0
    pts = shapely.get_coordinates(shapely.segmentize(free.boundary, 0.05))
    return float(max(0.0, np.max(1.0 - fence.signed_distance(pts) / margin)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(INSIDE), st.floats(0.01, 3.0))
def test_free_space_keeps_the_margin(world: World, margin: float) -> None:
    fence = Geofence(world.zones)
    assert _margin_shortfall(fence, fence.free_space(margin), margin) <= 1e-9


@pytest.mark.parametrize("turn_quanta", [1.2, 1.45, 2.4, 5.333])
def test_free_space_keeps_the_margin_at_any_corner_angle(turn_quanta: float) -> None:
    """GEOS draws a round join with round(turn / quantum) chords, so one chord can span
    up to 1.5 quanta (a hexagon's corner turns 5.33 quanta, 6 chords of 1.07 each)."""
    turn = turn_quanta * math.pi / (2 * ERODE_QUAD_SEGS)
    n = round(2 * math.pi / turn)
    radii = np.full(n, 20.0)
    corner = Zone.polygon("corner", outline((50, 50), radii, np.zeros(n)), inclusion=False)
    spike = math.pi - turn  # one corner of a triangle turns by `turn` exactly
    tri = Zone.polygon("spike", [(20, 80), (20 + 15 * math.cos(spike / 2), 80 + 15 * math.sin(
        spike / 2)), (20 + 15 * math.cos(spike / 2), 80 - 15 * math.sin(spike / 2))],
        inclusion=False)
    fence = Geofence([Zone.polygon("area", square(0, 0, 100, 100)), corner, tri])
    assert _margin_shortfall(fence, fence.free_space(3.0), 3.0) <= 1e-9


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(INSIDE), st.floats(0.01, 3.0))
def test_free_space_fast_path_equals_eroding_the_region(world: World, margin: float) -> None:
    """Shrinking the inclusions and growing the exclusions separately is the same as
    shrinking the finished region (GEOS may drop a sliver either way)."""
    fence = Geofence(world.zones)
    fast = fence.free_space(margin)
    general = fence.region().buffer(-margin * ERODE_SCALE, quad_segs=ERODE_QUAD_SEGS)
    assert fast.symmetric_difference(general).area <= 1e-4 * max(general.area, 1.0)


def test_a_negligible_margin_keeps_the_free_space() -> None:
    """A margin far below the coordinates' resolution must not empty the free space
    (GEOS returns an empty polygon for a negative buffer of about 1e-15 m)."""
    fence = Geofence([Zone.polygon("area", square(7.772542026556087, 5.848984621151772,
                                                  92.17990861610477, 98.79152618601769))])
    for margin in (1e-9, 1e-15, 1e-300):
        assert fence.free_space(margin).area == pytest.approx(fence.region().area, rel=1e-6)


def test_free_space_with_a_priority_corridor_keeps_the_margin() -> None:
    for margin in (0.5, 2.0, 4.0):
        assert _margin_shortfall(FENCE, FENCE.free_space(margin), margin) <= 1e-9


@pytest.mark.parametrize(("altitude", "vertical_margin", "tower_is_obstacle"), [
    (80.0, 0.0, False),  # above the tower's 60 m ceiling
    (80.0, 15.0, False),  # 65 m at the lowest: still above it
    (80.0, 25.0, True),  # could sink to 55 m: inside its band
    (60.0, 0.0, True),  # on its ceiling
    (30.0, 5.0, True),
])
def test_free_space_at_an_altitude(altitude, vertical_margin, tower_is_obstacle) -> None:
    free = FENCE.free_space(2.0, altitude=altitude, vertical_margin_m=vertical_margin)
    assert free.covers(Point(30, 30)) is not tower_is_obstacle
    assert free.covers(Point(50, 10))
    assert not free.covers(Point(70, 40))  # the school holds at every altitude
    assert free.covers(Point(70, 32.5))  # so does the corridor through it


def test_free_space_above_the_ceiling_is_empty() -> None:
    assert FENCE.free_space(1.0, altitude=130.0).is_empty
    assert FENCE.free_space(1.0, altitude=115.0, vertical_margin_m=10.0).is_empty
    assert not FENCE.free_space(1.0, altitude=115.0).is_empty
