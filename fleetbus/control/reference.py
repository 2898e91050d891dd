"""What the controller tracks over its horizon: the planned path and its corridor, seen
from where the vehicle is now.

The reference starts at the vehicle's projection onto the path and runs ahead at the
path's speed profile, so a vehicle that falls behind (a gust, a slow start) is never
chased by a reference running away from it: it is asked to resume the planned speed,
not to catch up with a clock. The projection is tracked, not searched for afresh: from
the last one it moves along the path while the path comes nearer the vehicle, so a
vehicle pushed back is followed back, and a path that passes near itself (a U-turn, a
loop) is not short-cut to its other leg.

Each stage gets one cell of the corridor. Every path sample owns a cell: the one it lies
deepest in, taken in order along the path (so where a survey's lanes run side by side
and their cells overlap, a sample still belongs to its own lane's cell). The vehicle's
cell is the one holding it, taken in order and never more than one past the cell its
projection's sample owns. A stage moves on, at most to one past the cell its reference
point's sample owns (a rounded turn enters the next cell early), and only once that
point and the previous plan's position for that stage are both inside the next cell:
the constraints the solver receives are the ones its warm start already satisfies, and
the hand-over happens where consecutive cells overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

Cell = tuple[np.ndarray, np.ndarray]  # A (m, 2), b (m,): A @ [x, y] <= b

CELL_TOL_M = 1e-6  # a point this far outside a cell is still inside (rounding)
LOOKAHEAD_SEGMENTS = 50  # cells considered ahead of the current one
MIN_ADVANCE = 0.05  # reference speed floor as a share of the path's top speed, so the
# reference reaches the end of a profile that slows to zero there


@dataclass
class Horizon:
    ref: np.ndarray  # (dim + 1, N + 1): positions then speed, per stage
    corridor: list[Cell]  # N cells, one per stage
    cells: list[int]  # which corridor cell each stage uses
    progress_m: float  # arc length of the vehicle's projection onto the path
    remaining_m: float  # path length still ahead of the projection


class PathReference:
    """A path (points (M, 2 or 3), speeds (M,)) with its corridor cells, followed from
    one control step to the next."""

    def __init__(self, points: ArrayLike, speeds: ArrayLike, cells: list[Cell]) -> None:
        self.points = np.atleast_2d(np.asarray(points, float))
        self.speeds = np.asarray(speeds, float).ravel()
        if len(self.points) < 2 or len(self.speeds) != len(self.points):
            raise ValueError(f"path: need >= 2 points with one speed each, got "
                             f"{len(self.points)} points and {len(self.speeds)} speeds")
        if not (np.all(np.isfinite(self.points)) and np.all(np.isfinite(self.speeds))
                and np.all(self.speeds >= 0)):
            raise ValueError("path: points and speeds must be finite, speeds >= 0")
        if not cells:
            raise ValueError("path: a corridor needs at least one cell")
        self.cells = [(np.atleast_2d(np.asarray(A, float)), np.asarray(b, float).ravel())
                      for A, b in cells]
        for i, (A, b) in enumerate(self.cells):
            if A.shape != (len(b), 2) or not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
                raise ValueError(f"path: corridor cell {i} is not finite rows of A (m, 2), "
                                 f"b (m,): A {A.shape}, b {b.shape}")
        steps = np.linalg.norm(np.diff(self.points, axis=0), axis=1)
        self.s = np.concatenate([[0.0], np.cumsum(steps)])
        self.length_m = float(self.s[-1])
        self._segment = 0  # where the last projection fell
        self._cell = 0  # the cell the vehicle was last assigned
        self.sample_cells = self._cells_along()

    def horizon(self, position: ArrayLike, horizon: int, dt: float,
                previous: np.ndarray | None = None) -> Horizon:
        """Reference and corridor for the next `horizon` steps of `dt` s from `position`;
        `previous`: positions (N+1, >= 2) the last solution predicted for this horizon's
        stages (shifted to start now), which steer the hand-over between cells."""
        p = np.asarray(position, float)[: self.points.shape[1]]
        s0 = self._project(p)
        top = max(float(self.speeds.max()), 1e-3)
        s = np.empty(horizon + 1)
        s[0] = s0
        for k in range(horizon):
            v = max(float(np.interp(s[k], self.s, self.speeds)), MIN_ADVANCE * top)
            s[k + 1] = min(self.length_m, s[k] + v * dt)
        points = np.column_stack([np.interp(s, self.s, self.points[:, i])
                                  for i in range(self.points.shape[1])])
        speeds = np.interp(s, self.s, self.speeds)
        ref = np.vstack([points.T, speeds])
        cells = self._assign_cells(p[:2], s, points[:, :2], previous, horizon)
        return Horizon(ref, [self.cells[c] for c in cells], cells, s0, self.length_m - s0)

    def _project(self, p: np.ndarray) -> float:
        """Arc length of the vehicle's projection: from the last projection's segment,
        step to the next (or the previous) segment while that one is nearer."""
        i = self._segment
        while i + 1 < len(self.points) - 1 and self._distance(i + 1, p)[0] <= self._distance(
                i, p)[0]:
            i += 1
        while i > 0 and self._distance(i - 1, p)[0] < self._distance(i, p)[0]:
            i -= 1
        self._segment = i
        return float(self.s[i] + self._distance(i, p)[1])

    def _distance(self, i: int, p: np.ndarray) -> tuple[float, float]:
        """Distance from p to segment i, and how far along the segment its foot is."""
        a, b = self.points[i], self.points[i + 1]
        ab = b - a
        length = float(np.linalg.norm(ab))
        t = 0.0 if length < 1e-12 else min(max(float((p - a) @ ab) / length ** 2, 0.0), 1.0)
        return float(np.linalg.norm(a + t * ab - p)), t * length

    def _assign_cells(self, p: np.ndarray, s: np.ndarray, ref: np.ndarray,
                      previous: np.ndarray | None, horizon: int) -> list[int]:
        current = self._start_cell(p, self._cell_at(s[0]) + 1)
        cells = []
        for k in range(horizon):
            # the reference's own cell, or the next where a turn is rounded inside it
            target = self._cell_at(s[k]) + 1
            probes = [ref[k]] if previous is None else [ref[k], previous[k, :2]]
            while (current < min(target, len(self.cells) - 1)
                   and all(self._inside(current + 1, q) for q in probes)):
                current += 1
            cells.append(current)
        return cells

    def _start_cell(self, p: np.ndarray, last: int) -> int:
        """The cell holding the vehicle, from the one it was in: the further of it and the
        next one, else the first further on, else the least violated one (it is outside:
        the softened constraints steer it back in). Never two ahead, nor past `last` (one
        past its progress's cell), back to which it returns when pushed back: where a
        survey's lanes run side by side, a cell of the next lane can hold it too."""
        first = min(self._cell, last)
        ahead = range(first, min(first + LOOKAHEAD_SEGMENTS, last + 1, len(self.cells)))
        holding = [c for c in ahead if self._inside(c, p)]
        near = [c for c in holding if c <= self._cell + 1]
        if near or holding:
            self._cell = near[-1] if near else holding[0]
            return self._cell
        violation = [float(np.max(self.cells[c][0] @ p - self.cells[c][1])) for c in ahead]
        self._cell = ahead[int(np.argmin(violation))]
        return self._cell

    def _cell_at(self, s: float) -> int:
        """The cell owned by the path sample at arc length s (the last one at or before)."""
        i = int(np.searchsorted(self.s, s, side="right")) - 1
        return int(self.sample_cells[min(max(i, 0), len(self.sample_cells) - 1)])

    def _cells_along(self) -> np.ndarray:
        """Each path sample's cell: from the previous sample's, the next one once the
        sample lies deeper in it (cells overlap where segments meet), or further on when
        the sample has left both (a cell too short to own a sample)."""
        out = np.empty(len(self.points), int)
        c, last = 0, len(self.cells) - 1
        for i, q in enumerate(self.points[:, :2]):
            here = self._depth(c, q)
            nxt = self._depth(c + 1, q) if c < last else -np.inf
            if nxt > here:
                c += 1
            elif here < -CELL_TOL_M and c < last:  # outside both: the least outside ahead
                ahead = range(c, min(c + LOOKAHEAD_SEGMENTS, last + 1))
                c = max(ahead, key=lambda j: self._depth(j, q))
            out[i] = c
        return out

    def _depth(self, cell: int, q: np.ndarray) -> float:
        """How far inside `cell` q lies (negative: outside)."""
        A, b = self.cells[cell]
        return float(np.min(b - A @ q))

    def _inside(self, cell: int, q: np.ndarray) -> bool:
        A, b = self.cells[cell]
        return bool(np.all(A @ q <= b + CELL_TOL_M))
