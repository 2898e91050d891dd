"""Random polygonal worlds for the planner tests and the planning benchmark, and an
independent brute-force shortest path to check the planner against: Dijkstra over the
visibility graph of every vertex of the free space (not only the reflex ones), each pair
tested with shapely."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from hypothesis import assume
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from fleetbus.planners import Geofence, Zone

SIDE_M = 100.0  # the random test worlds fit in [0, SIDE_M]^2
# The brute force counts a segment as visible when it lies in the free space grown by
# this fraction of the world's size: tangent segments through a vertex must pass.
VISIBILITY_SLACK = 1e-9


@dataclass(frozen=True)
class World:
    zones: tuple[Zone, ...]
    margin_m: float
    start: np.ndarray
    goal: np.ndarray

    def free(self) -> BaseGeometry:
        return Geofence(self.zones).free_space(self.margin_m)


def outline(center: Sequence[float], radii: Sequence[float], jitter: Sequence[float],
            phase: float = 0.0) -> np.ndarray:
    """Vertices at increasing angles around `center` (one per radius): a star-shaped
    polygon, convex when every radius is the same. Each jitter in [0, 1] moves its angle
    by up to 0.8 of the spacing, so consecutive angles never meet."""
    n = len(radii)
    angles = phase + 2 * math.pi / n * (np.arange(n) + 0.8 * np.asarray(jitter))
    return np.asarray(center) + np.asarray(radii)[:, None] * np.stack(
        [np.cos(angles), np.sin(angles)], axis=1)


# -- hypothesis ------------------------------------------------------------------------------


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Rounded to a micrometre: hypothesis likes 1e-300, which is no geography and far
    below every tolerance of the planner."""
    return st.floats(low, high).map(lambda x: round(x, 6))


_unit = _floats(0.0, 1.0)
_coord = _floats(0.0, SIDE_M)


def _units(n: int) -> st.SearchStrategy[list[float]]:
    return st.lists(_unit, min_size=n, max_size=n)


@st.composite
def _inclusion(draw: st.DrawFn) -> Zone:
    if draw(st.booleans()):
        x0, y0 = draw(_floats(0.0, 10.0)), draw(_floats(0.0, 10.0))
        x1, y1 = draw(_floats(90.0, SIDE_M)), draw(_floats(90.0, SIDE_M))
        return Zone.polygon("area", [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    n = draw(st.integers(5, 14))
    radii = 30.0 + 20.0 * np.array(draw(_units(n)))
    return Zone.polygon("area", outline((50.0, 50.0), radii, draw(_units(n))))


@st.composite
def _exclusion(draw: st.DrawFn, index: int) -> Zone:
    kind = draw(st.sampled_from(["convex", "star", "circle"]))
    center = (draw(_coord), draw(_coord))
    radius = draw(_floats(3.0, 18.0))
    name = f"{kind}{index}"
    if kind == "circle":
        return Zone.circle_zone(name, center, radius, inclusion=False)
    n = draw(st.integers(3, 8) if kind == "convex" else st.integers(5, 12))
    radii = np.full(n, radius) if kind == "convex" else radius * (
        0.3 + 0.7 * np.array(draw(_units(n))))
    phase = draw(_floats(0.0, 2 * math.pi))
    return Zone.polygon(name, outline(center, radii, draw(_units(n)), phase), inclusion=False)


INSIDE = ("inside", "inside", "anywhere")  # strictly inside the free space, or blocked
ON_EDGE = ("boundary", "vertex", "inside")  # on the free space's boundary or a vertex
# An "inside" point is drawn in a triangle of the free space scaled by this factor about
# its centroid, so that it is never on the free space's boundary.
SHRINK = 0.98


@st.composite
def _endpoint(draw: st.DrawFn, free: BaseGeometry, where: str) -> np.ndarray:
    """A point anywhere in the world (often blocked), inside the free space, on its
    boundary or on one of its vertices."""
    p = np.array([draw(_coord), draw(_coord)])
    if free.is_empty or where == "anywhere":
        return p
    if where == "inside":  # a random point of a random triangle of the free space
        triangles = shapely.get_parts(shapely.constrained_delaunay_triangles(free))
        corners = shapely.get_coordinates(triangles[draw(st.integers(0, len(triangles) - 1))])
        u, v = sorted(draw(_units(2)))
        p = u * corners[0] + (v - u) * corners[1] + (1 - v) * corners[2]
        return SHRINK * p + (1 - SHRINK) * corners[:3].mean(axis=0)
    if where == "boundary":
        return shapely.get_coordinates(shapely.shortest_line(free.boundary, Point(p)))[0]
    vertices = shapely.get_coordinates(free)
    return vertices[draw(st.integers(0, len(vertices) - 1))]


@st.composite
def worlds(draw: st.DrawFn, ends: Sequence[str] = INSIDE) -> World:
    """An inclusion box or star polygon, 1-6 exclusion polygons (convex or not) and
    circles anywhere (they may overlap each other and the edge), a margin of 0-3 m, and
    a start and goal drawn as `ends` says. With INSIDE, start and goal differ."""
    n = draw(st.integers(1, 6))
    zones = (draw(_inclusion()), *(draw(_exclusion(k)) for k in range(n)))
    margin = draw(st.one_of(st.just(0.0), _floats(0.0, 3.0)))
    free = Geofence(zones).free_space(margin)
    start, goal = (draw(_endpoint(free, draw(st.sampled_from(ends)))) for _ in range(2))
    assume(ends != INSIDE or not np.array_equal(start, goal))
    return World(zones, margin, start, goal)


# -- seeded worlds, the benchmark's among them ------------------------------------------------


def disc_world(seed: int = 0, vertices: int = 1000, obstacles: int = 50,
               radius_m: float = 1000.0, sizes_m: tuple[float, float] = (20.0, 80.0),
               margin_m: float = 5.0) -> World:
    """A noisy circle of `vertices` vertices with `obstacles` convex exclusion zones (5-12
    vertices, radius within `sizes_m`) that keep clear of each other by more than twice
    the margin, so that many routes go between them; start and goal near opposite sides.
    The defaults are the planning benchmark's world."""
    rng = np.random.default_rng(seed)
    theta = 2 * math.pi * np.arange(vertices) / vertices
    a, b = rng.uniform(0, 2 * math.pi, 2)
    r = radius_m * (1 + 0.015 * np.sin(7 * theta + a) + 0.008 * np.sin(23 * theta + b)
                    + rng.uniform(-0.002, 0.002, vertices))
    zones = [Zone.polygon("area", np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1))]
    start = np.array([-0.93 * radius_m, 0.0])
    goal = -start
    placed: list[tuple[np.ndarray, float]] = [(start, sizes_m[0]), (goal, sizes_m[0])]
    while len(placed) < obstacles + 2:
        size = rng.uniform(*sizes_m)
        center = rng.uniform(-0.85, 0.85, 2) * radius_m
        gap = 2 * margin_m + 0.005 * radius_m
        if np.hypot(*center) + size > 0.9 * radius_m or any(
                np.hypot(*(center - c)) < size + s + gap for c, s in placed):
            continue
        n = int(rng.integers(5, 13))
        ring = outline(center, np.full(n, size), rng.uniform(0, 1, n), rng.uniform(0, 6.3))
        zones.append(Zone.polygon(f"obstacle{len(placed) - 2}", ring, inclusion=False))
        placed.append((center, size))
    return World(tuple(zones), margin_m, start, goal)


# -- brute force -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    status: str  # as PlanResult.status
    length_m: float = math.inf
    points: np.ndarray | None = None


def brute_force(free: BaseGeometry, start: np.ndarray, goal: np.ndarray) -> Reference:
    """The shortest path over the full visibility graph of start, goal and every vertex of
    `free`, each of the n(n-1)/2 segments tested against the (slightly grown) free space."""
    if not free.covers(Point(start)):
        return Reference("start_blocked")
    if not free.covers(Point(goal)):
        return Reference("goal_blocked")
    x0, y0, x1, y1 = free.bounds
    region = free.buffer(VISIBILITY_SLACK * max(x1 - x0, y1 - y0, 1.0), join_style="mitre")
    shapely.prepare(region)
    nodes = np.vstack([start, goal, np.unique(shapely.get_coordinates(free), axis=0)])
    i, j = np.triu_indices(len(nodes), 1)
    seen = shapely.covers(region, shapely.linestrings(np.stack([nodes[i], nodes[j]], axis=1)))
    i, j = i[seen], j[seen]
    # A zero-length edge (start or goal on a vertex) is dropped by the sparse graph; it is
    # never needed, since the coinciding nodes see the same nodes.
    weights = np.hypot(*(nodes[i] - nodes[j]).T)
    graph = coo_matrix((weights, (i, j)), shape=(len(nodes),) * 2).tocsr()
    dist, pred = dijkstra(graph, directed=False, indices=0, return_predecessors=True)
    if np.array_equal(start, goal):
        return Reference("ok", 0.0, np.array([start, goal]))
    if not np.isfinite(dist[1]):
        return Reference("no_path")
    chain = [1]
    while chain[-1] != 0:
        chain.append(int(pred[chain[-1]]))
    return Reference("ok", float(dist[1]), nodes[chain[::-1]])
