"""Convex corridors (fleetbus.planners.corridor) over random polygonal worlds: every cell
convex, inside free space, holding its segment, within the half-width, described exactly by
A @ x <= b, and overlapping its neighbours; and the hard cases by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box

from fleetbus.planners.corridor import CorridorCell, convex_corridor

TOL = 1e-9
WORLD = box(0.0, 0.0, 100.0, 100.0)


def check_cell(cell: CorridorCell, points: np.ndarray, free, half_width: float) -> None:
    a, b = points[cell.segment], points[cell.segment + 1]
    poly = cell.polygon
    assert poly.is_valid and poly.area > 0.0
    assert poly.convex_hull.area - poly.area <= TOL * max(1.0, poly.area)
    assert free.buffer(TOL).covers(poly)
    assert poly.buffer(TOL).covers(LineString([a, b]))
    assert cell.contains(np.array([a, b]), tol=TOL).all()
    # no wider than the half-width, no further past the ends
    length = math.dist(a, b)
    u = (b - a) / length
    rel = np.asarray(poly.exterior.coords) - a
    along, across = rel @ u, rel @ [-u[1], u[0]]
    assert np.all(np.abs(across) <= half_width + TOL)
    assert np.all((along >= -half_width - TOL) & (along <= length + half_width + TOL))
    # A @ x <= b is the polygon: unit rows, and the same answer for random points except
    # within rounding of the boundary
    assert np.allclose(np.hypot(*cell.A.T), 1.0)
    x0, y0, x1, y1 = poly.bounds
    probe = np.random.default_rng(cell.segment).uniform(
        [x0 - 1, y0 - 1], [x1 + 1, y1 + 1], (300, 2))
    by_rows = cell.contains(probe)
    by_shapely = shapely.covers(poly, shapely.points(probe))
    differ = by_rows != by_shapely
    assert np.all(shapely.distance(poly.exterior, shapely.points(probe[differ])) <= TOL)


def check_corridor(points: np.ndarray, free, half_width: float) -> list[CorridorCell]:
    cells = convex_corridor(points, free, half_width)
    assert [c.segment for c in cells] == list(range(len(points) - 1))
    for cell in cells:
        check_cell(cell, points, free, half_width)
    for before, after in itertools.pairwise(cells):
        shared = points[after.segment]
        assert before.contains(shared, tol=TOL) and after.contains(shared, tol=TOL)
    return cells


# -- random worlds ---------------------------------------------------------------------------


@st.composite
def obstacles(draw: st.DrawFn) -> Polygon:
    """A rotated rectangle, or the convex hull of a few points around a centre."""
    cx, cy = draw(st.floats(10.0, 90.0)), draw(st.floats(10.0, 90.0))
    if draw(st.booleans()):
        w, h = draw(st.floats(2.0, 30.0)), draw(st.floats(2.0, 30.0))
        rect = box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return affinity.rotate(rect, draw(st.floats(0.0, 180.0)))
    n = draw(st.integers(3, 7))
    angles = draw(st.lists(st.floats(0.0, 2 * math.pi), min_size=n, max_size=n))
    radii = draw(st.lists(st.floats(2.0, 15.0), min_size=n, max_size=n))
    pts = [(cx + r * math.cos(t), cy + r * math.sin(t)) for r, t in zip(radii, angles,
                                                                       strict=True)]
    return shapely.convex_hull(shapely.multipoints(pts)).buffer(0.0)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[np.ndarray, object]:
    """A box with 1-4 obstacles, and a path through its free space that hops between
    random points and obstacle corners (so segments hug corners and run along edges),
    each hop checked with free.covers."""
    blocked = shapely.union_all([draw(obstacles()) for _ in range(draw(st.integers(1, 4)))])
    free = WORLD.difference(blocked)
    assume(free.geom_type == "Polygon" and free.area > 100.0)
    corners = shapely.get_coordinates(shapely.get_rings(free))
    loose = np.array(draw(st.lists(st.tuples(st.floats(1.0, 99.0), st.floats(1.0, 99.0)),
                                   min_size=4, max_size=8)))
    candidates = np.vstack([corners, loose])
    candidates = candidates[shapely.covers(free, shapely.points(candidates))]
    path = [candidates[draw(st.integers(0, len(candidates) - 1))]]
    for _ in range(draw(st.integers(1, 6))):
        hops = shapely.linestrings(np.stack(
            [np.broadcast_to(path[-1], candidates.shape), candidates], axis=1))
        seen = np.flatnonzero(shapely.covers(free, hops)
                              & (np.hypot(*(candidates - path[-1]).T) > 1e-3))
        if len(seen) == 0:
            break
        path.append(candidates[seen[draw(st.integers(0, len(seen) - 1))]])
    assume(len(path) >= 2)
    return np.array(path), free


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much,
                                                                 HealthCheck.too_slow])
@given(world=worlds(), half_width=st.sampled_from([0.5, 3.0, 10.0, 40.0]))
def test_random_worlds(world, half_width):
    points, free = world
    check_corridor(points, free, half_width)


# -- by hand ---------------------------------------------------------------------------------


def test_open_space_gives_the_whole_rectangle():
    cells = check_corridor(np.array([[10.0, 10.0], [50.0, 40.0]]), WORLD, 5.0)
    assert cells[0].polygon.area == pytest.approx((50.0 + 10.0) * 10.0)
    assert len(cells[0].A) == 4


def test_hugging_corners_leaves_room():
    """An S-bend between two boxes, touching a corner of each: the middle segment has
    obstacles touching both of its ends, on opposite sides. Cutting along the segment's
    own line at both ends would leave nothing; the cuts along the obstacles' edges leave
    a thin but real cell."""
    north, south = box(-20.0, 0.0, 0.0, 20.0), box(5.0, -20.0, 25.0, -2.0)
    free = box(-100.0, -100.0, 100.0, 100.0).difference(north).difference(south)
    points = np.array([[-30.0, -1.0], [0.0, 0.0], [5.0, -2.0], [30.0, -2.0]])
    cells = check_corridor(points, free, 5.0)
    middle = cells[1].polygon
    assert middle.area > 10.0
    assert not middle.intersects(north.buffer(-TOL)) and not middle.intersects(
        south.buffer(-TOL))
    # the last segment runs along the south box's top: the cell is the free side of it
    assert cells[2].polygon.bounds[1] == pytest.approx(-2.0)
    for before, after in itertools.pairwise(cells):
        assert before.polygon.intersection(after.polygon).area > 1.0  # room to move across


def test_segment_along_a_wall_keeps_the_free_side():
    wall = box(0.0, 40.0, 100.0, 100.0)
    free = WORLD.difference(wall)
    cell = check_corridor(np.array([[10.0, 40.0], [90.0, 40.0]]), free, 5.0)[0]
    assert cell.polygon.bounds == pytest.approx((5.0, 35.0, 95.0, 40.0))


def test_many_thin_obstacles_still_end():
    """A comb of teeth on both sides of a long segment: one cut per tooth at most."""
    teeth = [box(x, 2.0 + (x % 3), x + 0.5, 20.0) for x in np.arange(1.0, 99.0, 2.0)]
    teeth += [box(x, -20.0, x + 0.5, -1.0 - (x % 5) / 2) for x in np.arange(2.0, 99.0, 2.0)]
    free = box(-10.0, -30.0, 110.0, 30.0).difference(shapely.union_all(teeth))
    cell = check_corridor(np.array([[0.0, 0.0], [100.0, 0.0]]), free, 10.0)[0]
    assert cell.polygon.bounds[1] == pytest.approx(-1.0)
    assert cell.polygon.bounds[3] == pytest.approx(2.0)


def test_gap_of_zero_width_is_refused():
    above = Polygon([(5.0, 0.0), (4.0, 3.0), (6.0, 3.0)])
    below = Polygon([(5.0, 0.0), (6.0, -3.0), (4.0, -3.0)])
    free = box(-10.0, -10.0, 20.0, 10.0).difference(above).difference(below)
    assert free.covers(LineString([(0.0, 0.0), (10.0, 0.0)]))
    with pytest.raises(ValueError, match=r"segment 0 .* zero width"):
        convex_corridor([[0.0, 0.0], [10.0, 0.0]], free, 2.0)


def test_path_through_an_obstacle_is_refused():
    free = WORLD.difference(box(40.0, 40.0, 60.0, 60.0))
    with pytest.raises(ValueError, match="segment 1 enters blocked space"):
        convex_corridor([[10.0, 10.0], [30.0, 50.0], [70.0, 50.0]], free, 5.0)


@pytest.mark.parametrize(("name", "kwargs"), [
    ("max_half_width_m", {"max_half_width_m": 0.0}),
    ("max_half_width_m", {"max_half_width_m": math.inf}),
    ("max_half_width_m", {"max_half_width_m": "wide"}),
    ("points", {"points": [[0.0, 0.0]]}),
    ("points", {"points": [[0.0, 0.0], [math.nan, 1.0]]}),
])
def test_bad_input(name, kwargs):
    args = {"points": [[10.0, 10.0], [20.0, 10.0]], "free": WORLD, "max_half_width_m": 2.0,
            **kwargs}
    with pytest.raises(ValueError, match=name):
        convex_corridor(**args)


def test_contains_is_vectorised():
    cell = convex_corridor([[10.0, 10.0], [20.0, 10.0]], WORLD, 2.0)[0]
    grid = np.array([[[15.0, 10.0], [15.0, 13.0]], [[7.0, 9.0], [22.5, 12.5]]])
    assert cell.contains(grid).tolist() == [[True, False], [False, False]]
    assert cell.contains(grid, tol=0.6).tolist() == [[True, False], [False, True]]
    assert cell.contains([15.0, 10.0]) == np.True_
    assert not cell.contains(Point(15.0, 13.0).coords[0])
