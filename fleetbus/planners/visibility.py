"""Shortest paths in polygonal free space: A* over the visibility graph, built lazily.

A shortest path between two points of a polygonal domain is a polyline that bends only at
corners where the free space is reflex (an obstacle corner sticking into it), and each of
its segments is tangent to the obstacle at both ends. So the only graph nodes are those
reflex corners, and an edge u -> v is worth considering only if the line through it does
not cut into the obstacle at v, and at u the path turns around the obstacle rather than
away from it. A* expands nodes in order of cost plus straight-line distance to the goal
(an admissible, consistent bound), and tests visibility only for the edges that would
improve a node, in one vectorised shapely call per expansion. Nothing is built for the
parts of the map the search never looks at, which is what keeps a 1 000-vertex fence with
50 exclusion zones inside the planning budget; the result is the exact optimum of the
full visibility graph.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from fleetbus.planners.geofence import boundary_segments

Status = Literal["ok", "no_path", "start_blocked", "goal_blocked"]
# Before a visibility test each end of a segment moves this fraction of the free space's
# size (or of the segment's length) into the free side: far above rounding, far below
# anything a vehicle could notice.
NUDGE = 1e-9


@dataclass(frozen=True)
class PlanResult:
    """A path (K, 2) from start to goal, or why there is none."""

    status: Status
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    length_m: float = math.inf
    message: str = ""
    expanded: int = 0  # nodes A* closed
    checked: int = 0  # candidate edges whose visibility was tested

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class VisibilityPlanner:
    """Plans in one free-space geometry (Polygon or MultiPolygon, holes allowed)."""

    def __init__(self, free: BaseGeometry) -> None:
        if free.is_empty:
            raise ValueError("free space is empty: the margin leaves no room to move")
        parts = [orient(p, 1.0) for p in shapely.get_parts(free)]  # free space on the left
        self.free = free
        shapely.prepare(free)
        self._parts = parts
        for p in parts:
            shapely.prepare(p)
        self._edges = [boundary_segments(p) for p in parts]  # free space on each's left
        x0, y0, x1, y1 = free.bounds
        self.nudge = NUDGE * max(x1 - x0, y1 - y0, 1.0)
        xy, prev, nxt, comp = [], [], [], []
        for k, part in enumerate(parts):
            for ring in (part.exterior, *part.interiors):
                c = np.asarray(ring.coords)[:-1]
                p, n = np.roll(c, 1, axis=0), np.roll(c, -1, axis=0)
                turn = _cross(c - p, n - c)
                reflex = turn < 0.0  # a right turn with free space on the left
                xy.append(c[reflex])
                prev.append(p[reflex])
                nxt.append(n[reflex])
                comp.append(np.full(int(reflex.sum()), k))
        self.nodes = np.concatenate(xy) if xy else np.zeros((0, 2))
        self._prev = np.concatenate(prev) if prev else np.zeros((0, 2))
        self._next = np.concatenate(nxt) if nxt else np.zeros((0, 2))
        self._component = np.concatenate(comp) if comp else np.zeros(0, int)

    def _part_of(self, point: np.ndarray) -> int | None:
        for k, part in enumerate(self._parts):
            if part.covers(Point(point)):
                return k
        return None

    def plan(self, start: np.ndarray, goal: np.ndarray) -> PlanResult:
        """The shortest path from start to goal (ENU x, y in metres)."""
        start = np.asarray(start, float)[:2]
        goal = np.asarray(goal, float)[:2]
        for name, p in (("start", start), ("goal", goal)):
            if not np.isfinite(p).all():
                return PlanResult(f"{name}_blocked", message=f"{name} {p.tolist()} is not finite")
        a, b = self._part_of(start), self._part_of(goal)
        if a is None:
            return PlanResult("start_blocked", message=f"start {_fmt(start)} is not in free "
                              "space: inside an obstacle or within the margin of one")
        if b is None:
            return PlanResult("goal_blocked", message=f"goal {_fmt(goal)} is not in free "
                              "space: inside an obstacle or within the margin of one")
        if a != b:
            return PlanResult("no_path", message=f"goal {_fmt(goal)} is in a part of the free "
                              f"space that start {_fmt(start)} cannot reach")
        if np.array_equal(start, goal):
            return PlanResult("ok", np.array([start, goal]), 0.0)
        return self._search(start, goal, a)

    def _inward(self, p: np.ndarray, part: int) -> np.ndarray:
        """p, or when it lies on the boundary (where a vehicle holding its margin is), p
        moved a nudge into the free space, so that visibility from it along an edge is
        not lost to rounding. Inward is the sum of the left normals of the edges it
        touches (the free space is on their left)."""
        e = self._edges[part]
        a, ab = e[:, 0], e[:, 1] - e[:, 0]
        length2 = np.einsum("ij,ij->i", ab, ab)
        t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.where(length2 > 0, length2, 1.0), 0, 1)
        touching = np.hypot(*(a + t[:, None] * ab - p).T) < self.nudge
        if not touching.any():
            return p
        normal = np.stack([-ab[touching, 1], ab[touching, 0]], axis=1)
        normal = (normal / np.sqrt(length2[touching])[:, None]).sum(axis=0)
        size = float(np.hypot(*normal))
        return p if size == 0.0 else p + self.nudge * normal / size

    def _search(self, start: np.ndarray, goal: np.ndarray, part: int) -> PlanResult:
        # Node indices: the reflex corners of this part, then the goal, then the start.
        sel = np.flatnonzero(self._component == part)
        s = _Search(self.free, self.nudge, np.vstack([self.nodes[sel], goal, start]),
                    np.vstack([self._prev[sel], goal, start]),
                    np.vstack([self._next[sel], goal, start]), len(sel))
        s.base[s.goal] = self._inward(goal, part)
        s.base[s.start] = self._inward(start, part)
        heap = [(s.h[s.start], s.start)]
        expanded = checked = 0
        while heap:
            key, v = heapq.heappop(heap)
            if s.closed[v] or key != s.g[v] + s.h[v]:
                continue  # closed already, or superseded by a better entry
            if v != s.start:
                # Edges are tested when their far node comes up, not when they are found:
                # most candidates are superseded or never reached, and cost nothing.
                checked += 1
                if not s.visible(s.parent[v], np.array([v]))[0]:
                    checked += s.repair(v)
                    if math.isfinite(s.g[v]):
                        heapq.heappush(heap, (s.g[v] + s.h[v], v))
                    continue
            s.closed[v] = True
            expanded += 1
            if v == s.goal:
                return self._result(s.pts, s.parent, s.goal, s.start, s.g[v], expanded, checked)
            for w in s.relax(v).tolist():
                heapq.heappush(heap, (s.g[w] + s.h[w], w))
        return PlanResult("no_path", message=f"no path from {_fmt(start)} to {_fmt(goal)}",
                          expanded=expanded, checked=checked)

    @staticmethod
    def _result(pts: np.ndarray, parent: np.ndarray, goal: int, start: int, length: float,
                expanded: int, checked: int) -> PlanResult:
        chain = [goal]
        while chain[-1] != start:
            chain.append(int(parent[chain[-1]]))
        return PlanResult("ok", pts[chain[::-1]].copy(), float(length),
                          expanded=expanded, checked=checked)


class _Search:
    """A* state over corner nodes plus goal and start, with the pruning rules of
    shortest paths (see the module docstring)."""

    def __init__(self, free: BaseGeometry, nudge: float, pts: np.ndarray, prev: np.ndarray,
                 nxt: np.ndarray, n_corners: int) -> None:
        self.free, self.pts, self.nudge = free, pts, nudge
        self.base = pts.copy()  # where visibility is tested from: start/goal moved inward
        # Each corner's neighbours, relative to it: they tell where its obstacle lies.
        self.to_prev, self.to_next = prev - pts, nxt - pts
        self.goal, self.start = n_corners, n_corners + 1
        self.is_corner = np.arange(len(pts)) < n_corners
        self.h = np.hypot(*(pts - pts[self.goal]).T)
        self.g = np.full(len(pts), np.inf)
        self.g[self.start] = 0.0
        self.parent = np.full(len(pts), -1)
        self.closed = np.zeros(len(pts), bool)

    def _allowed(self, u: np.ndarray | int, d: np.ndarray,
                 v: np.ndarray | slice) -> np.ndarray:
        """Edges u -> v (d = v - u) that can be part of a shortest path: tangent at the
        corner v, and at the corner u turning towards its obstacle (or straight on)."""
        ok = ~self.is_corner[v] | (_cross(d, self.to_prev[v]) * _cross(d, self.to_next[v])
                                   >= 0.0)
        turn = np.sign(_cross(self.pts[u] - self.pts[self.parent[u]], d))
        wraps = (turn * _cross(d, self.to_prev[u]) >= 0.0) & (
            turn * _cross(d, self.to_next[u]) >= 0.0)
        return ok & (~self.is_corner[u] | wraps)

    def relax(self, u: int) -> np.ndarray:
        """Offer u as the parent of every node it could improve; returns those nodes."""
        d = self.pts - self.pts[u]
        cost = self.g[u] + np.hypot(d[:, 0], d[:, 1])
        cand = np.flatnonzero(~self.closed & (cost < self.g) & self._allowed(u, d, slice(None)))
        self.g[cand] = cost[cand]
        self.parent[cand] = u
        return cand

    def visible(self, u: int, targets: np.ndarray) -> np.ndarray:
        """Whether each segment u -> target lies in free space. A segment from a corner
        is tangent to the boundary there, so rounding alone could put it a hair outside;
        each end is moved a nudge along the segment and away from its corner's obstacle
        before the test. (Ends exactly on the boundary also cost GEOS ~50x more.)"""
        d = self.base[targets] - self.base[u]
        left = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.hypot(d[:, 0], d[:, 1])[:, None]
        a = self.base[u] + NUDGE * d - self._obstacle_side(np.full(len(d), u), d)[:, None] * (
            self.nudge * left)
        b = self.base[targets] - NUDGE * d - self._obstacle_side(targets, d)[:, None] * (
            self.nudge * left)
        return shapely.covers(self.free, shapely.linestrings(np.stack([a, b], axis=1)))

    def _obstacle_side(self, nodes: np.ndarray, d: np.ndarray) -> np.ndarray:
        """+1 where a corner's obstacle lies left of the line along d, -1 right, 0 for the
        start and goal (which have no obstacle)."""
        side = _cross(d, self.to_prev[nodes]) + _cross(d, self.to_next[nodes])
        return np.where(self.is_corner[nodes], np.sign(side), 0.0)

    def repair(self, v: int) -> int:
        """v's best parent was blocked: take the best visible one among closed nodes
        (g[v] becomes inf when there is none yet). Returns the edges tested."""
        closed = np.flatnonzero(self.closed)
        d = self.pts[v] - self.pts[closed]
        cost = self.g[closed] + np.hypot(d[:, 0], d[:, 1])
        keep = self._allowed(closed, d, np.full(len(closed), v))
        closed, cost = closed[keep], cost[keep]
        order = np.argsort(cost)
        closed, cost = closed[order], cost[order]
        self.g[v], self.parent[v] = np.inf, -1
        if len(closed) == 0:
            return 0
        seen = self.visible(v, closed)
        if seen.any():
            best = int(np.argmax(seen))
            self.g[v], self.parent[v] = cost[best], closed[best]
        return len(closed)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _fmt(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in p) + ")"
