"""Convex corridors around a path: one convex cell per segment, inside free space.

An MPC cannot keep a vehicle inside non-convex free space directly, but it can keep each
stretch of the trajectory inside a convex cell given as linear inequalities A @ x <= b. The
cells follow the "safe flight corridor" idea: start from the rectangle reaching h to either
side of the segment and h past its ends (so consecutive cells overlap around the vertex they
share, which is where the MPC moves from one cell to the next), and cut it with
half-planes that keep the segment and drop the obstacles, nearest obstacle first.

The blocked part of the rectangle (rectangle minus `free`) is split into triangles, and the
triangle nearest to the segment, clipped to the current cell, is cut off with the line
through its nearest point normal to the direction from the segment's nearest point. That
is the line through the nearest blocked point of the whole construction (the nearest point
of a union is the nearest point of its nearest part), and because a triangle and a segment
are convex, it drops the whole triangle: two disjoint convex sets lie on either side of the
line through the closest point of one, normal to their closest-pair direction. So each
triangle is cut at most once and the loop ends after at most as many cuts as there are
triangles, with every remaining triangle outside the cell: no iteration cap, and no
fallback cell, is needed. (Clipping only moves a triangle away, so its distance before
clipping orders a lazy heap: a triangle found further than the next key goes back in.)

When the nearest triangle touches the segment (a path vertex lies on the boundary of
`free`, or a segment runs along a wall) there is no closest-pair direction. A line through
the contact separating two touching convex sets can be taken parallel to an edge of one
of them (the separating axis theorem), so the candidates are the segment's own line, with
the cell on the free side, and the triangle's edges; of those that keep the segment, the
one leaving the largest cell wins. At a path vertex that is usually the obstacle's edge
ahead of the vertex: the segment's own line would leave no room on the inner side of the
bend, and in the middle of an S-bend (obstacles touching both ends, on opposite sides) no
room at all. A triangle touching the middle of the segment allows only the segment's own
line, so those go first, and a touch at an end is decided knowing that cut. The same
candidates stand in when a distance is so small against the coordinates that rounding
turns its direction: every line is checked to drop its triangle before it is used.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import ArrayLike
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

TOUCH_M = 1e-9  # blocked space nearer than this touches the segment
# A planner tests visibility with the segment's ends nudged into free space, so a segment
# may overlap blocked space by a hair; more than this and it is not a path in `free`.
GRAZE_M = 1e-6
# Blocked space within this of the cell's boundary is what rounding leaves of a triangle
# already cut off; taking it for an obstacle would tilt the next cut for nothing.
SLIVER_M = 1e-10
DUPLICATE_M = 1e-12  # clipped vertices closer than this are one vertex

# Inside the loop polygons are lists of (x, y) tuples and lines are (mx, my, c) for
# mx*x + my*y <= c: for polygons of a handful of vertices plain Python is ~40x faster than
# numpy, whose per-call overhead would dominate.
Point2 = tuple[float, float]
Line = tuple[float, float, float]


@dataclass(frozen=True, eq=False)
class CorridorCell:
    """A convex cell: the polygon {x : A @ x <= b}, A (k, 2) with unit rows (outward edge
    normals), b (k,) in metres, for the path segment `segment` (points[segment] to
    points[segment + 1])."""

    A: np.ndarray
    b: np.ndarray
    polygon: Polygon
    segment: int

    def contains(self, xy: ArrayLike, tol: float = 0.0) -> np.ndarray:
        """Whether each point of xy (..., 2) satisfies A @ x <= b + tol."""
        return np.all(np.asarray(xy, dtype=float) @ self.A.T <= self.b + tol, axis=-1)


def convex_corridor(points: ArrayLike, free: BaseGeometry,
                    max_half_width_m: float) -> list[CorridorCell]:
    """One convex cell per segment of the path `points` (N, 2), inside `free` (to within
    TOUCH_M), containing its segment, at most max_half_width_m to either side of it and
    past either end. Raises ValueError when a segment leaves `free` (by more than GRAZE_M)
    or passes a gap of zero width, where no cell has any area."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"points must have shape (N, 2) with N >= 2, got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite")
    try:
        half_width = float(max_half_width_m)
    except (TypeError, ValueError):
        raise ValueError(f"max_half_width_m must be a number, got {max_half_width_m!r}") from None
    if not (math.isfinite(half_width) and half_width > 0.0):
        raise ValueError(f"max_half_width_m must be positive and finite, got {max_half_width_m}")
    shapely.prepare(free)
    return [_cell(pts[i:i + 2], free, half_width, i) for i in range(len(pts) - 1)]


def _cell(seg: np.ndarray, free: BaseGeometry, h: float, index: int) -> CorridorCell:
    a, b = seg
    length = float(np.hypot(*(b - a)))
    u = (b - a) / length if length > TOUCH_M else np.array([1.0, 0.0])
    n = np.array([-u[1], u[0]])
    rect = np.array([a - h * u - h * n, b + h * u - h * n, b + h * u + h * n,
                     a - h * u + h * n])
    lines: list[Line] = [(*m.tolist(), float(m @ p) + h) for m, p in
                         ((u, b), (-u, a), (n, a), (-n, a))]
    cell: list[Point2] = [tuple(p) for p in rect.tolist()]
    segment: tuple[Point2, Point2] = (tuple(a.tolist()), tuple(b.tolist()))
    tris, heap = _blocked_triangles(Polygon(rect), free, seg)
    heapq.heapify(heap)
    while heap:
        _, _, i = heapq.heappop(heap)
        piece = _inside(tris[i], lines)
        if piece is None:
            continue  # already outside the cell
        line, dist = _cut(piece, segment, (n[0], n[1]), cell, index)
        if heap and dist > heap[0][0] + TOUCH_M:
            heapq.heappush(heap, (dist, 1, i))  # clipping moved it away: not the nearest now
            continue
        cell = _clip(cell, line)
        lines.append(line)
    return _finish(cell, lines, seg, index)


def _blocked_triangles(rect: Polygon, free: BaseGeometry, seg: np.ndarray) -> tuple[
        list[list[Point2]], list[tuple[float, int, int]]]:
    """The blocked part of the rectangle as counter-clockwise triangles, and a heap key for
    each: its distance to the segment, then 0 for a triangle touching the middle half of
    the segment. Such a triangle leaves one choice, the segment's own line, so it goes
    first: a touch at an end, which has a choice, is then decided knowing that cut."""
    if free.covers(rect):  # prepared: far cheaper than the difference
        return [], []
    blocked = shapely.difference(rect, free)
    if blocked.is_empty:
        return [], []
    parts = shapely.get_parts(shapely.constrained_delaunay_triangles(blocked))
    tris = shapely.get_coordinates(parts).reshape(-1, 4, 2)[:, :3]
    clockwise = _cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]) < 0.0
    tris[clockwise] = tris[clockwise, ::-1]
    dist = shapely.distance(parts, LineString(seg))
    middle = shapely.distance(parts, LineString(0.75 * seg + 0.25 * seg[::-1])) <= TOUCH_M
    keys = zip(dist.tolist(), np.where(middle, 0, 1).tolist(), range(len(tris)), strict=True)
    return [[tuple(p) for p in tri] for tri in tris.tolist()], list(keys)


def _inside(tri: list[Point2], lines: list[Line]) -> list[Point2] | None:
    """The triangle clipped to the cell shrunk by SLIVER_M, or None when nothing of it is
    left."""
    piece = tri
    for mx, my, c in lines:
        c -= SLIVER_M
        beyond = [mx * x + my * y > c for x, y in piece]
        if all(beyond):
            return None
        if any(beyond):
            piece = _clip(piece, (mx, my, c))
            if len(piece) < 3:
                return None
    return piece if _area(piece) > 0.0 else None


def _cut(piece: list[Point2], seg: tuple[Point2, Point2], n: Point2, cell: list[Point2],
         index: int) -> tuple[Line, float]:
    """The line to cut the cell along, keeping the segment and dropping the piece, and the
    piece's distance to the segment. The candidate directions are those of the separating
    axis theorem; the gap along one of them is a lower bound of the distance."""
    axes = [n, (-n[0], -n[1])]
    for (x0, y0), (x1, y1) in zip(piece, piece[1:] + piece[:1], strict=True):
        norm = math.hypot(x1 - x0, y1 - y0)
        axes.append(((y0 - y1) / norm, (x1 - x0) / norm))  # into the piece (it is CCW)
    candidates = [_line(m, piece, seg) for m in axes]
    widest = max(gap for _, gap in candidates)
    dist = 0.0
    if widest > TOUCH_M:
        dist, (px, py), (qx, qy) = _closest(piece, seg)
        line, gap = _line(((qx - px) / dist, (qy - py) / dist), piece, seg)
        if gap >= -TOUCH_M:
            return line, dist
        # A tiny distance far from the origin: rounding has turned its direction enough
        # that the line, moved out to hold the whole segment, no longer drops the piece.
    elif widest < -GRAZE_M:
        x, y = np.mean(piece, axis=0)
        raise ValueError(f"segment {index} enters blocked space near ({x:.2f}, {y:.2f}): "
                         "the path is not inside free space")
    # Touching: of the axes that separate (or, for a grazing segment, come nearest to it),
    # the one leaving the largest cell.
    floor = min(widest, -TOUCH_M)
    return max((line for line, gap in candidates if gap >= floor),
               key=lambda line: _area(_clip(cell, line))), dist


def _line(m: Point2, piece: list[Point2], seg: tuple[Point2, Point2]) -> tuple[Line, float]:
    """The line of normal m through the piece's extreme point towards the segment, and the
    gap between piece and segment along m. When the segment grazes the piece (negative
    gap) the line moves out to the segment: the cell must hold the segment."""
    low = min(m[0] * x + m[1] * y for x, y in piece)
    high = max(m[0] * x + m[1] * y for x, y in seg)
    return (m[0], m[1], max(low, high)), low - high


def _closest(piece: list[Point2],
             seg: tuple[Point2, Point2]) -> tuple[float, Point2, Point2]:
    """The distance between a convex polygon and a segment that do not meet, with the
    closest points p (on the segment) and q (on the polygon): one of them is a vertex."""
    pairs = [(_foot(q, *seg), q) for q in piece]
    for e in zip(piece, piece[1:] + piece[:1], strict=True):
        pairs += [(p, _foot(p, *e)) for p in seg]
    p, q = min(pairs, key=lambda pq: math.hypot(pq[1][0] - pq[0][0], pq[1][1] - pq[0][1]))
    return math.hypot(q[0] - p[0], q[1] - p[1]), p, q


def _foot(x: Point2, e0: Point2, e1: Point2) -> Point2:
    """The point of segment e0-e1 nearest to x."""
    dx, dy = e1[0] - e0[0], e1[1] - e0[1]
    dd = dx * dx + dy * dy
    t = 0.0 if dd == 0.0 else min(max(((x[0] - e0[0]) * dx + (x[1] - e0[1]) * dy) / dd, 0.0),
                                  1.0)
    return e0[0] + t * dx, e0[1] + t * dy


def _clip(poly: list[Point2], line: Line) -> list[Point2]:
    """The convex polygon cut to mx*x + my*y <= c, vertex order kept (Sutherland-Hodgman
    with one line)."""
    mx, my, c = line
    out: list[Point2] = []
    prev = poly[-1]
    before = mx * prev[0] + my * prev[1] - c
    for p in poly:
        now = mx * p[0] + my * p[1] - c
        if before < 0.0 < now or now < 0.0 < before:
            t = before / (before - now)
            out.append((prev[0] + t * (p[0] - prev[0]), prev[1] + t * (p[1] - prev[1])))
        if now <= 0.0:
            out.append(p)
        prev, before = p, now
    return [p for p, q in zip(out, out[-1:] + out[:-1], strict=True)
            if math.hypot(p[0] - q[0], p[1] - q[1]) > DUPLICATE_M] or out[:1]


def _finish(cell: list[Point2], lines: list[Line], seg: np.ndarray,
            index: int) -> CorridorCell:
    """The cell from its vertices and cuts, keeping only the rows on its boundary (the rest
    are implied by them)."""
    verts = np.array(cell).reshape(-1, 2)
    length = float(np.hypot(*(seg[1] - seg[0])))
    if len(verts) < 3 or _area(cell) <= TOUCH_M * max(length, 1.0):
        raise ValueError(f"segment {index} ({_fmt(seg[0])} to {_fmt(seg[1])}) passes a gap "
                         "of zero width: no convex cell with room around it exists")
    rows = np.array(lines)
    on_boundary = np.max(verts @ rows[:, :2].T - rows[:, 2], axis=0) >= -TOUCH_M
    A, b = rows[on_boundary, :2], rows[on_boundary, 2]
    A.setflags(write=False)
    b.setflags(write=False)
    return CorridorCell(A, b, Polygon(verts), index)


def _area(poly: list[Point2]) -> float:
    """Signed area (counter-clockwise positive), taken about the first vertex: about the
    origin, a sliver's area would drown in the rounding of the large products."""
    if len(poly) < 3:
        return 0.0
    x0, y0 = poly[0]
    rel = [(x - x0, y - y0) for x, y in poly[1:]]
    return 0.5 * sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in itertools.pairwise(rel))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in p) + ")"
