"""Corner fillets for shortest paths, and the fastest speed profile along the result.

A shortest path in polygonal free space bends only at obstacle corners, and no vehicle can
follow a bend of zero radius. `fillet_path` replaces every bend by a circular arc of the
turn radius R tangent to both segments; `speed_profile` then gives the fastest speeds along
the result under speed, lateral and longitudinal acceleration limits.

How far a fillet departs from the path. Let the path turn by theta at the corner P, and let
the arc of centre C touch the first segment at T1 and the second at T2, both at
t = R*tan(theta/2) from P. CT1 is perpendicular to the first segment, so the arc point X at
angle psi from T1 (0 <= psi <= theta) lies R*(1 - cos psi) from the first segment's line,
and its foot on that line is R*sin(psi) from T1 towards P. For psi <= theta/2 that foot is
on the segment (R*sin(psi) <= R*tan(theta/2) = t, and T1 itself is on the segment when the
tangent lengths fit), so X is within R*(1 - cos(theta/2)) of the path; the half
psi >= theta/2 is the mirror image with the second segment. Every arc point is therefore
within c = R*(1 - cos(theta/2)) of the polyline, with equality only at the arc's midpoint.
A path planned in free.buffer(-c) has a disc of radius c inside `free` around each of its
points, so its fillet lies inside `free`: such a path can always be filleted as long as
the tangent lengths fit. That c is the `needed_clearance_m` reported for a corner that does
not fit. Planning with a clearance moves the path away from the obstacle, which changes
its bends a little (from a fixed start and goal the tangents to a grown obstacle usually
turn a little more), so the planner should add some slack or re-plan until the corners fit.

Runs of bends. A shortest path around a rounded obstacle (an eroded geofence has round
corners, a circle zone is a polygon) wraps it with many small bends on short segments, and
their separate fillets cannot fit. Consecutive bends that turn the same way and whose
tangent lengths overlap are merged into one bend at the point V where the lines of the
run's first and last segments meet, turning by the sum of their angles; the arc is tangent
to those two lines. The bound carries over: each arc point lies within
R*(1 - cos(Theta/2)) of one of the two lines, on the obstacle's side, and the lines are
supporting lines of a convex obstacle grown by the clearance, so a run planned with that
clearance around a convex obstacle can be filleted too. Every arc is checked against `free`
in any case; the bound only says how much clearance to ask for.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import shapely
from numpy.typing import ArrayLike
from shapely.geometry import LineString, box
from shapely.geometry.base import BaseGeometry

Reason = Literal["short_segment", "blocked"]

DUPLICATE_M = 1e-9  # consecutive vertices closer than this are one vertex
STRAIGHT_RAD = 1e-9  # a bend smaller than this is straight and needs no arc
# Arcs are checked as polylines whose chords lie at most this far inside the true arc, and
# a polyline passes when it is within the same distance of `free`: an arc that only
# touches an obstacle (planned with exactly the needed clearance) has chords a hair into
# it. So an arc that passes is inside `free` to within two microns: far below anything a
# vehicle could notice, and still only ~1 800 chords for R = 10 m, 90 deg.
CHECK_SAGITTA_M = 1e-6
MAX_TURN_RAD = math.pi - 1e-6  # a bend (or run) turning further cannot be one arc


class TightCorner(NamedTuple):
    """An input vertex left sharp: its fillet does not fit ("short_segment": the tangent
    lengths overrun a segment; "blocked": the arc leaves `free`). needed_clearance_m is
    the most the fillet would depart from the path (see the module docstring); re-plan with
    that much extra clearance."""

    index: int
    reason: Reason
    needed_clearance_m: float


@dataclass(frozen=True, eq=False)
class SmoothedPath:
    """The filleted path densely sampled: points (M, 2) ENU m, arc length s (M,), signed
    curvature (M,) in 1/m (left turns positive) and heading (M,) in rad ENU, unwrapped so it
    can be differenced. At a tangent point the curvature is the arc's, so a speed limit
    derived from it already holds where the arc begins. A vertex left sharp has infinite
    curvature (a speed profile stops there) and its heading jumps after it."""

    points: np.ndarray
    s: np.ndarray
    curvature: np.ndarray
    heading: np.ndarray
    tight_corners: tuple[TightCorner, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.tight_corners


@dataclass
class _Bend:
    """One bend, or a merged run of bends, between vertices first..last of the cleaned
    path: it turns by `turn` (signed) about `apex`, where the lines of its first and last
    segments meet, and its fillet touches them `t` from the apex."""

    first: int
    last: int
    turn: float
    apex: np.ndarray
    t: float


class _Line(NamedTuple):
    start: np.ndarray
    end: np.ndarray
    direction: np.ndarray  # unit; kept even when start == end

    @property
    def length(self) -> float:
        return float(np.hypot(*(self.end - self.start)))

    @property
    def curvature(self) -> float:
        return 0.0

    def at(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        heading = math.atan2(self.direction[1], self.direction[0])
        return self.start + d[:, None] * self.direction, np.full(len(d), heading)


class _Arc(NamedTuple):
    center: np.ndarray
    radius: float
    start_angle: float  # of the start point, seen from the centre
    sweep: float  # signed, left turns positive

    @property
    def length(self) -> float:
        return self.radius * abs(self.sweep)

    @property
    def curvature(self) -> float:
        return math.copysign(1.0 / self.radius, self.sweep)

    def at(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angle = self.start_angle + math.copysign(1.0, self.sweep) * d / self.radius
        xy = self.center + self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
        return xy, angle + math.copysign(math.pi / 2, self.sweep)


class _Corner(NamedTuple):
    """A vertex left sharp: no length, infinite curvature."""

    turn: float

    @property
    def length(self) -> float:
        return 0.0

    @property
    def curvature(self) -> float:
        return math.copysign(math.inf, self.turn)

    def at(self, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((0, 2)), np.zeros(0)


def fillet_path(points: ArrayLike, free: BaseGeometry, turn_radius_m: float,
                sample_step_m: float = 0.25, keep_sharp: Collection[int] = ()) -> SmoothedPath:
    """Rounds every bend of the polyline `points` (N, 2) with an arc of radius
    turn_radius_m that lies inside `free`, and samples the result at most sample_step_m
    apart (every tangent point is a sample). A bend whose arc does not fit is left sharp
    and reported in `tight_corners` (by its index in `points`), never cut through an
    obstacle; a merged run that does not fit reports each of its bends. The vertices in
    `keep_sharp` (indices in `points`: waypoints to pass exactly) are left sharp on
    purpose, and not reported. Repeated vertices are dropped; ValueError for fewer than
    two distinct vertices or a bad argument."""
    pts, index = _distinct_vertices(points)
    sharp = {v for v, i in enumerate(index) if int(i) in set(keep_sharp)}
    radius = _positive("turn_radius_m", turn_radius_m)
    step = _positive("sample_step_m", sample_step_m)
    shapely.prepare(free)
    turns = _turns(pts)
    bends = _merge_runs(pts, turns, radius)
    fits = _tangents_fit(pts, bends)
    pieces: list[_Line | _Arc | _Corner] = []
    tight: list[TightCorner] = []
    cursor = pts[0]
    for bend, fit in zip(bends, fits, strict=True):
        wanted = sharp.isdisjoint(range(bend.first, bend.last + 1))
        arc = _fillet(pts, bend, radius) if fit and wanted else None
        if arc is not None and _covered(free, _check_line(pts, bend, arc)):
            u_in = _direction(pts, bend.first - 1)
            pieces += [_Line(cursor, bend.apex - bend.t * u_in, u_in), arc]
            cursor = bend.apex + bend.t * _direction(pts, bend.last)
            continue
        reason: Reason = "blocked" if fit else "short_segment"
        clearance = radius * (1.0 - math.cos(abs(bend.turn) / 2.0))
        for v in range(bend.first, bend.last + 1):
            pieces.append(_Line(cursor, pts[v], _direction(pts, v - 1)))
            cursor = pts[v]
            if abs(turns[v]) > STRAIGHT_RAD:  # a merged run may hold straight vertices
                pieces.append(_Corner(turns[v]))
                if wanted:
                    tight.append(TightCorner(int(index[v]), reason, clearance))
    pieces.append(_Line(cursor, pts[-1], _direction(pts, len(pts) - 2)))
    return _sample(pieces, pts, step, tuple(tight))


def speed_profile(s: ArrayLike, curvature: ArrayLike, v_max: float, a_lat_max: float,
                  a_accel: float, a_decel: float, v_start: float = 0.0,
                  v_end: float = 0.0, v_cap: ArrayLike | None = None) -> np.ndarray:
    """The fastest speed at every sample subject to v <= v_max, v <= v_cap (per sample,
    e.g. what stopping short of the fence ahead allows), v^2*|k| <= a_lat_max,
    v[i+1]^2 <= v[i]^2 + 2*a_accel*ds and v[i]^2 <= v[i+1]^2 + 2*a_decel*ds. The first
    speed is at most v_start and the last at most v_end; a v_start that the limits ahead
    cannot absorb is clipped (compare v[0] with v_start to see that the vehicle must brake
    harder than a_decel). Infinite curvature (a sharp corner) means a stop.

    The passes have closed forms: with V = v^2, the forward limit
    V[i] = min over j <= i of (cap[j] + 2*a_accel*(s[i] - s[j])) is a running minimum of
    cap - 2*a_accel*s, and the backward limit likewise, so no Python loop is needed."""
    s_arr = _samples("s", s, allow_inf=False)
    k = _samples("curvature", curvature, allow_inf=True)
    if k.shape != s_arr.shape:
        raise ValueError(f"curvature has shape {k.shape}, s has {s_arr.shape}")
    if np.any(np.diff(s_arr) < 0.0):
        raise ValueError("s must be non-decreasing (arc length along the path)")
    v_max = _positive("v_max", v_max)
    a_lat_max = _positive("a_lat_max", a_lat_max)
    a_accel = _positive("a_accel", a_accel)
    a_decel = _positive("a_decel", a_decel)
    v_start = _non_negative("v_start", v_start)
    v_end = _non_negative("v_end", v_end)
    with np.errstate(divide="ignore", over="ignore"):  # k = 0 or tiny: no limit
        cap = np.minimum(v_max, np.sqrt(a_lat_max / np.abs(k))) ** 2
    if v_cap is not None:
        limit = _samples("v_cap", v_cap, allow_inf=True)
        if limit.shape != s_arr.shape or np.any(limit < 0.0):
            raise ValueError(f"v_cap must be {s_arr.shape} speeds >= 0, got {limit.shape}")
        cap = np.minimum(cap, limit**2)
    cap[0] = min(cap[0], v_start**2)
    cap[-1] = min(cap[-1], v_end**2)
    forward = np.minimum.accumulate(cap - 2.0 * a_accel * s_arr) + 2.0 * a_accel * s_arr
    backward = (np.minimum.accumulate((forward + 2.0 * a_decel * s_arr)[::-1])[::-1]
                - 2.0 * a_decel * s_arr)
    # The running minima round a little (s can be large); the cap itself is exact.
    return np.sqrt(np.clip(backward, 0.0, cap))


def _turns(pts: np.ndarray) -> np.ndarray:
    """The signed turn at every vertex (left positive; zero at the ends)."""
    d = np.diff(pts, axis=0)
    inner = np.arctan2(_cross(d[:-1], d[1:]), np.einsum("ij,ij->i", d[:-1], d[1:]))
    return np.concatenate([[0.0], inner, [0.0]])


def _merge_runs(pts: np.ndarray, turns: np.ndarray, radius: float) -> list[_Bend]:
    """The bends of the path, with consecutive same-way bends merged while their tangent
    lengths overlap (the most overlapping pair first)."""
    bends = [_bend(pts, v, v, float(turns[v]), radius)
             for v in np.flatnonzero(np.abs(turns) > STRAIGHT_RAD).tolist()]
    while True:
        best, overlap = None, DUPLICATE_M
        for j in range(len(bends) - 1):
            a, b = bends[j], bends[j + 1]
            excess = _excess(pts, a, b)
            if (excess > overlap and a.turn * b.turn > 0.0
                    and abs(a.turn + b.turn) < MAX_TURN_RAD):
                best, overlap = j, excess
        if best is None:
            return bends
        a, b = bends[best], bends[best + 1]
        bends[best:best + 2] = [_bend(pts, a.first, b.last, a.turn + b.turn, radius)]


def _bend(pts: np.ndarray, first: int, last: int, turn: float, radius: float) -> _Bend:
    u_in, u_out = _direction(pts, first - 1), _direction(pts, last)
    apex = pts[first]
    if last != first:
        along = _cross(pts[last] - pts[first], u_out) / _cross(u_in, u_out)
        apex = pts[first] + along * u_in
    t = radius * math.tan(abs(turn) / 2.0) if abs(turn) < MAX_TURN_RAD else math.inf
    return _Bend(first, last, turn, apex, t)


def _tangents_fit(pts: np.ndarray, bends: list[_Bend]) -> list[bool]:
    """Whether each fillet fits between its neighbours. On the straight between bends a and
    b, a's fillet must end before b's begins, and (in case b is left sharp) before b's
    first vertex; likewise for b. The path's ends are bends with no tangent length. Asking
    for both makes the answer independent of which neighbours end up sharp."""
    ends = [_Bend(0, 0, 0.0, pts[0], 0.0), _Bend(len(pts) - 1, len(pts) - 1, 0.0, pts[-1], 0.0)]
    chain = [ends[0], *bends, ends[1]]
    fits = [True] * len(chain)
    for j in range(len(chain) - 1):
        a, b = chain[j], chain[j + 1]
        u = _direction(pts, a.last)
        pos_a, pos_b = (a.apex - pts[a.last]) @ u, (b.apex - pts[a.last]) @ u
        both = _excess(pts, a, b) <= DUPLICATE_M
        fits[j] &= both and pos_a + a.t <= (pts[b.first] - pts[a.last]) @ u + DUPLICATE_M
        fits[j + 1] &= both and pos_b - b.t >= -DUPLICATE_M
    return fits[1:-1]


def _excess(pts: np.ndarray, a: _Bend, b: _Bend) -> float:
    """How far the fillets of consecutive bends a and b overlap on the straight between
    them (negative: they leave a straight)."""
    u = _direction(pts, a.last)
    return float(a.t + b.t - (b.apex - a.apex) @ u)


def _fillet(pts: np.ndarray, bend: _Bend, radius: float) -> _Arc:
    u_in = _direction(pts, bend.first - 1)
    tangent_point = bend.apex - bend.t * u_in
    side = math.copysign(1.0, bend.turn)
    center = tangent_point + side * radius * np.array([-u_in[1], u_in[0]])
    start = math.atan2(*(tangent_point - center)[::-1])
    return _Arc(center, radius, start, bend.turn)


def _check_line(pts: np.ndarray, bend: _Bend, arc: _Arc) -> np.ndarray:
    """The arc as a polyline fine enough to check, plus the straight stretches a merged run
    adds beyond its first and last vertices (they are not on the planned path)."""
    half_chord = math.acos(1.0 - min(CHECK_SAGITTA_M / arc.radius, 1.0))
    n = max(2, math.ceil(abs(arc.sweep) / (2.0 * half_chord)) + 1)
    xy, _ = arc.at(np.linspace(0.0, arc.length, n))
    u_in, u_out = _direction(pts, bend.first - 1), _direction(pts, bend.last)
    if (bend.apex - pts[bend.first]) @ u_in > bend.t:
        xy = np.vstack([pts[bend.first], xy])
    if (pts[bend.last] - bend.apex) @ u_out > bend.t:
        xy = np.vstack([xy, pts[bend.last]])
    return xy


def _covered(free: BaseGeometry, xy: np.ndarray) -> bool:
    """Whether the polyline is inside `free` up to CHECK_SAGITTA_M. The exact test settles
    almost every case; only a polyline touching the boundary needs the tolerance, and then
    only the part of `free` around it is grown (growing a large free space costs ms)."""
    line = LineString(xy)
    if free.covers(line):
        return True
    x0, y0, x1, y1 = line.bounds
    near = free.intersection(box(x0 - 1.0, y0 - 1.0, x1 + 1.0, y1 + 1.0))
    return bool(near.buffer(CHECK_SAGITTA_M).covers(line))


def _sample(pieces: list[_Line | _Arc | _Corner], pts: np.ndarray, step: float,
            tight: tuple[TightCorner, ...]) -> SmoothedPath:
    """Samples each piece at most `step` apart after its start (the previous piece's end).
    A sample shared by two pieces takes the curvature of the sharper one."""
    first = pts[1] - pts[0]
    xy, s, k, heading = [pts[:1]], [np.zeros(1)], [np.zeros(1)], [
        np.array([math.atan2(first[1], first[0])])]
    length = 0.0
    for piece in pieces:
        if abs(piece.curvature) > abs(k[-1][-1]):
            k[-1][-1] = piece.curvature
        n = math.ceil(piece.length / step)
        if piece.length <= DUPLICATE_M or n == 0:
            continue
        d = piece.length * np.arange(1, n + 1) / n
        p, h = piece.at(d)
        xy.append(p)
        heading.append(h)
        s.append(length + d)
        k.append(np.full(n, piece.curvature))
        length += piece.length
    return SmoothedPath(_frozen(np.vstack(xy)), _frozen(np.concatenate(s)),
                        _frozen(np.concatenate(k)),
                        _frozen(np.unwrap(np.concatenate(heading))), tight)


def _distinct_vertices(points: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The path without repeated vertices, and each kept vertex's index in the input."""
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("points must be finite")
    keep = np.concatenate([[True], np.hypot(*np.diff(pts, axis=0).T) > DUPLICATE_M])
    if keep.sum() < 2:
        raise ValueError("points must hold at least two distinct vertices")
    return pts[keep], np.flatnonzero(keep)


def _direction(pts: np.ndarray, segment: int) -> np.ndarray:
    d = pts[segment + 1] - pts[segment]
    return d / np.hypot(d[0], d[1])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _samples(name: str, values: ArrayLike, allow_inf: bool) -> np.ndarray:
    arr = np.array(values, dtype=float)
    if arr.ndim != 1 or len(arr) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be {'free of NaN' if allow_inf else 'finite'}")
    return arr


def _positive(name: str, value: float) -> float:
    number = _number(name, value)
    if number <= 0.0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return number


def _non_negative(name: str, value: float) -> float:
    number = _number(name, value)
    if number < 0.0:
        raise ValueError(f"{name} must be non-negative and finite, got {value!r}")
    return number


def _number(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr
