"""Corner fillets and speed profiles (fleetbus.planners.smoothing) on real shapely geometry:
the arc's radius and place, the clearance bound, corners that do not fit, and the limits
of the speed profile."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Polygon, box

from fleetbus.planners.smoothing import fillet_path, speed_profile

OPEN = box(-500.0, -500.0, 500.0, 500.0)
R = 5.0
INSIDE_M = 2e-6  # arcs are checked to a micron (smoothing.CHECK_SAGITTA_M), chords included


def corner(theta: float, length: float = 30.0, offset: float = 0.0) -> np.ndarray:
    """A path from the west turning left by theta at the origin; with an offset, the same
    path moved `offset` to the outside of the turn (both segments parallel to the
    original)."""
    u_out = np.array([math.cos(theta), math.sin(theta)])
    right_out = np.array([u_out[1], -u_out[0]])
    # the vertex where the line y = -offset meets the outgoing line moved right by offset
    along = (-offset - offset * right_out[1]) / u_out[1]
    vertex = offset * right_out + along * u_out
    return np.array([[-length, -offset], vertex, vertex + length * u_out])


def wedge(theta: float, size: float = 20.0) -> Polygon:
    """The obstacle on the inside of `corner(theta)`, its corner at the origin and its
    edges along both segments: the path hugs it."""
    angles = np.linspace(theta, math.pi, 4)
    return Polygon([(0.0, 0.0), *(size * np.stack([np.cos(angles), np.sin(angles)], axis=1))])


def inside(path, free) -> bool:
    """Whether every sample is in free space (the samples are on the true arcs; the chords
    between them would cut a little into an obstacle the arc only touches)."""
    return bool(shapely.covers(free.buffer(INSIDE_M), shapely.points(path.points)).all())


def test_right_angle_is_an_arc_of_the_turn_radius_inside_free():
    # An L-shaped channel 6 m wide around the path: its inner corner is 3*sqrt(2) m from
    # the vertex, more than the fillet's 5*(sqrt(2) - 1) = 2.07 m.
    free = shapely.union(box(-40.0, -3.0, 3.0, 3.0), box(-3.0, -3.0, 3.0, 40.0))
    path = fillet_path(corner(math.pi / 2), free, R, sample_step_m=0.1)
    assert path.ok and path.tight_corners == ()
    on_arc = path.curvature != 0.0
    assert np.allclose(path.curvature[on_arc], 1.0 / R)
    assert np.allclose(np.hypot(*(path.points[on_arc] - [-R, R]).T), R)  # centre (-R, R)
    # straight before the tangent point (-R, 0) and after (0, R); both are samples
    x, y = path.points.T
    assert np.all(path.curvature[(x < -R - 1e-9) | (y > R + 1e-9)] == 0.0)
    assert np.all(on_arc[(x > -R + 1e-9) & (y < R - 1e-9)])
    for tangent_point in ([-R, 0.0], [0.0, R]):
        assert np.min(np.hypot(*(path.points - tangent_point).T)) < 1e-12
    assert path.s[-1] == pytest.approx(2 * (30 - R) + R * math.pi / 2, rel=1e-12)
    assert np.max(np.diff(path.s)) <= 0.1 + 1e-12
    assert path.heading[0] == 0.0 and path.heading[-1] == pytest.approx(math.pi / 2)
    step = np.diff(path.points, axis=0)  # the heading is the direction of travel
    mid = (path.heading[1:] + path.heading[:-1]) / 2
    assert np.allclose(np.arctan2(step[:, 1], step[:, 0]), mid, atol=1e-9)
    assert inside(path, free)


def test_right_turn_has_negative_curvature():
    mirrored = corner(math.pi / 2) * [1.0, -1.0]
    path = fillet_path(mirrored, OPEN, R)
    assert path.ok
    assert set(np.unique(path.curvature)) == {-1.0 / R, 0.0}
    assert path.heading[-1] == pytest.approx(-math.pi / 2)


@settings(max_examples=60, deadline=None)
@given(theta=st.floats(0.05, math.pi - 0.05), radius=st.floats(0.5, 20.0),
       left=st.booleans())
def test_fillet_departs_at_most_the_bound(theta, radius, left):
    """The largest distance of the fillet from the polyline is R*(1 - cos(theta/2))."""
    length = 1.0 + 1.5 * radius * math.tan(theta / 2)
    points = corner(theta, length) * [1.0, 1.0 if left else -1.0]
    step = 0.01
    path = fillet_path(points, box(-2 * length, -2 * length, 2 * length, 2 * length),
                       radius, step)
    assert path.ok
    bound = radius * (1 - math.cos(theta / 2))
    dist = shapely.distance(LineString(points), shapely.points(path.points))
    assert dist.max() <= bound + 1e-9
    assert dist.max() >= bound - step  # reached at the arc's midpoint, between samples
    turn = np.sign(path.curvature[path.curvature != 0.0])
    assert np.all(turn == (1.0 if left else -1.0))
    assert np.ptp(path.heading) == pytest.approx(theta)


@pytest.mark.parametrize("theta", [math.pi / 3, math.pi / 2, 2 * math.pi / 3])
def test_corner_at_an_obstacle_is_reported_and_fits_with_the_clearance(theta):
    free = OPEN.difference(wedge(theta))
    hugging = fillet_path(corner(theta), free, R)
    needed = R * (1 - math.cos(theta / 2))
    assert not hugging.ok
    assert [(c.index, c.reason) for c in hugging.tight_corners] == [(1, "blocked")]
    assert hugging.tight_corners[0].needed_clearance_m == pytest.approx(needed, rel=1e-12)
    # left sharp, not cut: the vertex is on the path, with infinite curvature
    sharp = np.flatnonzero(np.isinf(hugging.curvature))
    assert len(sharp) == 1 and np.allclose(hugging.points[sharp[0]], [0.0, 0.0])
    assert inside(hugging, free)

    # The same turns planned with that clearance: every point at least `needed` from the
    # obstacle; now the fillet fits (at the arc's midpoint it touches the obstacle).
    replanned = corner(theta, offset=needed)
    assert LineString(replanned).distance(wedge(theta)) >= needed * (1 - 1e-9)
    path = fillet_path(replanned, free, R)
    assert path.ok
    assert inside(path, free)


def test_rounded_corner_is_one_arc():
    """A path planned around a round-buffered obstacle wraps it with many small bends on
    short segments (geofence erodes with round joins); they are filleted as one arc."""
    theta = math.pi / 2
    needed = R * (1 - math.cos(theta / 2))
    obstacle = wedge(theta, size=100.0)
    # grown as the geofence grows exclusions: chords kept at least `needed` away
    grown = obstacle.buffer(needed / math.cos(math.pi / 32), quad_segs=8)
    start, goal = np.array([-60.0, -1.2 * needed]), np.array([1.2 * needed, 60.0])
    chain = _wrap(grown, start, goal)
    assert len(chain) > 6  # several bends on the rounded corner
    free = OPEN.difference(obstacle)
    path = fillet_path(chain, free, R)
    assert path.ok
    on_arc = np.flatnonzero(path.curvature != 0.0)
    assert np.all(np.diff(on_arc) == 1)  # one arc ...
    assert np.allclose(path.curvature[on_arc], 1.0 / R)  # ... of the turn radius
    assert inside(path, free)
    assert _bends_overlap(chain, R)  # each bend on its own would not fit


def _bends_overlap(chain: np.ndarray, radius: float) -> bool:
    """Whether the separate fillets of two consecutive bends of the chain overlap."""
    d = np.diff(chain, axis=0)
    turn = np.abs(np.arctan2(d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0],
                             np.einsum("ij,ij->i", d[:-1], d[1:])))
    t = radius * np.tan(turn / 2)
    return bool(np.any(t[:-1] + t[1:] > np.hypot(*d[1:-1].T)))


def _wrap(obstacle: Polygon, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The shortest path from start to goal around a convex obstacle: the shorter of the
    two chains of the convex hull of all three between start and goal."""
    hull = np.asarray(shapely.convex_hull(shapely.union(
        obstacle, shapely.multipoints([start, goal]))).exterior.coords)[:-1]
    n = len(hull)
    i = int(np.argmin(np.hypot(*(hull - start).T)))
    j = int(np.argmin(np.hypot(*(hull - goal).T)))
    one_way = np.roll(hull, -i, axis=0)[:(j - i) % n + 1]
    other_way = np.roll(hull, -j, axis=0)[:(i - j) % n + 1][::-1]
    return min(one_way, other_way, key=lambda c: LineString(c).length)


def test_bends_too_close_together_are_reported():
    # An S-bend: left 45 deg, then right 45 deg 2.8 m later; each needs 4.1 m of it.
    s_bend = np.array([[0.0, 0.0], [10.0, 0.0], [12.0, 2.0], [30.0, 2.0]])
    path = fillet_path(s_bend, OPEN, 10.0)
    needed = 10.0 * (1 - math.cos(math.pi / 8))
    assert [(c.index, c.reason) for c in path.tight_corners] == [
        (1, "short_segment"), (2, "short_segment")]
    assert all(c.needed_clearance_m == pytest.approx(needed) for c in path.tight_corners)
    assert fillet_path(s_bend, OPEN, 3.0).ok  # a smaller radius fits

    # A U-turn 2 m wide: one arc would have to turn 180 deg.
    u_turn = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 2.0], [0.0, 2.0]])
    assert [c.reason for c in fillet_path(u_turn, OPEN, 5.0).tight_corners] == [
        "short_segment", "short_segment"]

    # The first and last segments give all their length to their one bend.
    short_end = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 20.0]])
    assert [c.index for c in fillet_path(short_end, OPEN, 5.0).tight_corners] == [1]
    assert fillet_path(short_end, OPEN, 1.0).ok


def test_straight_vertices_and_repeats_need_no_arc():
    points = np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    path = fillet_path(points, OPEN, R)
    assert path.ok
    assert np.all(path.curvature == 0.0) and np.all(path.heading == 0.0)
    assert path.s[-1] == pytest.approx(20.0)


def test_repeated_vertex_is_reported_by_its_input_index():
    points = np.array([[-30.0, 0.0], [-30.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 30.0]])
    path = fillet_path(points, OPEN.difference(wedge(math.pi / 2)), R)
    assert [c.index for c in path.tight_corners] == [2]


# -- speed profile ---------------------------------------------------------------------------


def reference_profile(s, k, v_max, a_lat, a_acc, a_dec, v_start, v_end) -> np.ndarray:
    """The textbook two-pass loop, to check the closed form against."""
    with np.errstate(divide="ignore", over="ignore"):  # k = 0 or tiny: no limit
        v = np.minimum(v_max, np.sqrt(a_lat / np.abs(k)))
    v[0] = min(v[0], v_start)
    v[-1] = min(v[-1], v_end)
    for i in range(len(s) - 1):
        v[i + 1] = min(v[i + 1], math.sqrt(v[i] ** 2 + 2 * a_acc * (s[i + 1] - s[i])))
    for i in reversed(range(len(s) - 1)):
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * a_dec * (s[i + 1] - s[i])))
    return v


positive = st.floats(0.1, 20.0)


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.one_of(st.just(0.0), st.floats(0.0, 5.0)), min_size=0, max_size=60),
       curvature=st.lists(st.one_of(st.just(0.0), st.floats(-2.0, 2.0)), min_size=61,
                          max_size=61),
       limits=st.tuples(positive, positive, positive, positive),
       v_start=st.floats(0.0, 30.0), v_end=st.floats(0.0, 30.0),
       offset=st.floats(0.0, 1e4))
def test_speed_profile_respects_every_limit(steps, curvature, limits, v_start, v_end,
                                            offset):
    s = offset + np.concatenate([[0.0], np.cumsum(steps)])
    k = np.array(curvature[:len(s)])
    v_max, a_lat, a_acc, a_dec = limits
    v = speed_profile(s, k, v_max, a_lat, a_acc, a_dec, v_start=v_start, v_end=v_end)
    tol = 1e-9 * (1 + v_max**2 + 2 * max(a_acc, a_dec) * s[-1])  # on squared speeds
    assert v.shape == s.shape and np.all(v >= 0.0)
    assert np.all(v <= v_max)
    assert np.all(v**2 * np.abs(k) <= a_lat * (1 + 1e-12))
    ds = np.diff(s)
    assert np.all(v[1:] ** 2 <= v[:-1] ** 2 + 2 * a_acc * ds + tol)
    assert np.all(v[:-1] ** 2 <= v[1:] ** 2 + 2 * a_dec * ds + tol)
    assert v[0] <= v_start and v[-1] <= v_end
    expected = reference_profile(s, k, v_max, a_lat, a_acc, a_dec, v_start, v_end)
    assert np.allclose(v**2, expected**2, rtol=0.0, atol=tol)  # and none faster


def test_speed_profile_along_a_filleted_path():
    # 200 m straight, a right angle of radius 5 m, 100 m straight
    points = np.array([[0.0, 0.0], [200.0, 0.0], [200.0, 100.0]])
    path = fillet_path(points, OPEN, R, 0.5)
    v_max, a_lat, a_acc, a_dec = 10.0, 2.0, 1.0, 1.5
    v = speed_profile(path.s, path.curvature, v_max, a_lat, a_acc, a_dec, v_end=1.0)
    assert v[0] == 0.0 and v[-1] == pytest.approx(1.0)
    assert v.max() == pytest.approx(v_max)  # reached on the long straight
    on_arc = np.flatnonzero(path.curvature != 0.0)
    v_arc = math.sqrt(a_lat * R)
    assert np.allclose(v[on_arc], v_arc)
    # braking before the arc: decreasing from top speed down to the arc speed, no harder
    # than a_decel
    top = np.flatnonzero(np.isclose(v[:on_arc[0]], v_max))[-1]
    braking = slice(top, on_arc[0] + 1)
    assert np.all(np.diff(v[braking]) <= 1e-12)
    assert path.s[on_arc[0]] - path.s[top] == pytest.approx(
        (v_max**2 - v_arc**2) / (2 * a_dec), abs=0.5)


def test_sharp_corner_means_a_stop():
    free = OPEN.difference(wedge(math.pi / 2))
    path = fillet_path(corner(math.pi / 2), free, R)
    v = speed_profile(path.s, path.curvature, 5.0, 2.0, 1.0, 1.0, v_start=3.0)
    assert v[np.isinf(path.curvature)].tolist() == [0.0]
    assert v[0] == 3.0


def test_impossible_start_speed_is_clipped():
    s = np.linspace(0.0, 10.0, 11)
    v = speed_profile(s, np.zeros(11), 20.0, 1.0, 1.0, 1.0, v_start=15.0, v_end=0.0)
    assert v[0] == pytest.approx(math.sqrt(2 * 1.0 * 10.0))  # what braking to 0 allows


GOOD = {"s": [0.0, 1.0, 2.0], "curvature": [0.0, 0.1, 0.0], "v_max": 5.0, "a_lat_max": 2.0,
        "a_accel": 1.0, "a_decel": 1.0, "v_start": 0.0, "v_end": 0.0}


@pytest.mark.parametrize(("name", "value"), [
    ("s", [0.0, 2.0, 1.0]), ("s", [0.0, math.inf, 3.0]), ("s", []), ("s", [[0.0, 1.0, 2.0]]),
    ("curvature", [0.0, math.nan, 0.0]), ("curvature", [0.0, 0.0]),
    ("v_max", 0.0), ("a_lat_max", -1.0), ("a_accel", math.nan), ("a_decel", math.inf),
    ("v_start", -1.0), ("v_end", math.nan), ("v_max", "fast"),
])
def test_speed_profile_rejects_bad_input(name, value):
    with pytest.raises(ValueError, match=name):
        speed_profile(**{**GOOD, name: value})


@pytest.mark.parametrize(("name", "kwargs"), [
    ("turn_radius_m", {"turn_radius_m": 0.0}),
    ("turn_radius_m", {"turn_radius_m": math.nan}),
    ("sample_step_m", {"sample_step_m": -0.1}),
    ("points", {"points": [0.0, 1.0]}),
    ("points", {"points": [[0.0, 0.0], [math.nan, 1.0]]}),
    ("points", {"points": [[1.0, 1.0], [1.0, 1.0]]}),
])
def test_fillet_rejects_bad_input(name, kwargs):
    args = {"points": [[0.0, 0.0], [1.0, 0.0]], "free": OPEN, "turn_radius_m": 1.0, **kwargs}
    with pytest.raises(ValueError, match=name):
        fillet_path(**args)
