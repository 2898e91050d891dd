"""A geofence: a set of zones, and the questions a planner and a guard ask of it.

The allowed region at an altitude is built from the zones active there, in priority order
(lowest first; at equal priority inclusions first, so an exclusion wins a tie): an
inclusion adds its area, an exclusion removes it. With no inclusion zone at all the world
starts allowed. Between two consecutive floor/ceiling values nothing changes, so the fence
is a stack of slabs, each a 2-D region; 3-D distances are exact over that stack.

Altitude is ENU z in metres. Passing points with two columns (or `altitude=None`) ignores
the altitude bands: what ships and cars need.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import shapely
import shapely.ops
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from fleetbus.planners.zones import GeofenceError, Zone

WORLD_PAD_M = 1.0e6  # a fence without inclusion zones allows this far around its zones
# Round joins of an erosion are chords inside the true arc; eroding by margin/cos(a/2),
# a = the angle of one chord, keeps every chord at least `margin` from the obstacle. GEOS
# rounds the number of chords in a corner, so one chord may span 1.5 times the nominal
# quarter-circle step: the scale allows for that.
ERODE_QUAD_SEGS = 8
ERODE_SCALE = 1.0 / math.cos(3 * math.pi / (8 * ERODE_QUAD_SEGS))
MIN_ERODE_M = 1e-6  # GEOS empties a polygon shrunk by a few ulps; below this, erode this much


@dataclass(frozen=True)
class Slab:
    """Altitudes [low, high] over which the allowed region does not change."""

    low: float
    high: float
    active: tuple[bool, ...]  # which zones hold over the slab
    region: BaseGeometry

    def vertical_gap(self, z: np.ndarray) -> np.ndarray:
        return np.maximum(np.maximum(self.low - z, z - self.high), 0.0)


class Geofence:
    """An immutable set of zones with an optional geodetic origin (lat, lon, alt)."""

    def __init__(self, zones: Iterable[Zone],
                 origin: tuple[float, float, float] | None = None) -> None:
        self.zones: tuple[Zone, ...] = tuple(zones)
        self.origin = origin
        seen: set[str] = set()
        for zone in self.zones:
            if zone.zone_id in seen:
                raise GeofenceError(f"zone id {zone.zone_id!r} is used twice")
            seen.add(zone.zone_id)
        self._floors = np.array([z.floor_m for z in self.zones])
        self._ceilings = np.array([z.ceiling_m for z in self.zones])
        self._regions: dict[tuple[bool, ...], BaseGeometry] = {}
        self._free: dict[tuple, BaseGeometry] = {}
        self._trees: dict[int, tuple[shapely.STRtree, np.ndarray]] = {}

    # -- building -----------------------------------------------------------------------

    def with_zone(self, zone: Zone) -> Geofence:
        """This fence plus `zone` (replacing a zone of the same id)."""
        return Geofence([z for z in self.zones if z.zone_id != zone.zone_id] + [zone],
                        self.origin)

    def without_zone(self, zone_id: str) -> Geofence:
        if all(z.zone_id != zone_id for z in self.zones):
            raise GeofenceError(f"no zone {zone_id!r} in this geofence")
        return Geofence([z for z in self.zones if z.zone_id != zone_id], self.origin)

    def zone(self, zone_id: str) -> Zone:
        for z in self.zones:
            if z.zone_id == zone_id:
                return z
        raise GeofenceError(f"no zone {zone_id!r} in this geofence")

    @cached_property
    def has_inclusion(self) -> bool:
        return any(z.inclusion for z in self.zones)

    @cached_property
    def _world(self) -> Polygon:
        if not self.zones:
            return box(-WORLD_PAD_M, -WORLD_PAD_M, WORLD_PAD_M, WORLD_PAD_M)
        x0, y0, x1, y1 = shapely.total_bounds([z.shape for z in self.zones])
        return box(x0 - WORLD_PAD_M, y0 - WORLD_PAD_M, x1 + WORLD_PAD_M, y1 + WORLD_PAD_M)

    def _active(self, z: np.ndarray | None) -> np.ndarray:
        """(N, zones) band mask; every zone is active when altitude is ignored."""
        if z is None:
            return np.ones((1, len(self.zones)), bool)
        z = np.asarray(z, float).reshape(-1, 1)
        return (z >= self._floors) & (z <= self._ceilings)

    def region(self, active: Sequence[bool] | None = None) -> BaseGeometry:
        """The allowed 2-D region with the given zones active (all when None)."""
        key = tuple(bool(a) for a in active) if active is not None else (True,) * len(
            self.zones)
        if key not in self._regions:
            order = sorted((i for i, on in enumerate(key) if on),
                           key=lambda i: (self.zones[i].priority, not self.zones[i].inclusion))
            region = Polygon() if self.has_inclusion else self._world
            # Consecutive zones of one kind are merged first: one boolean operation per run
            # instead of one per zone.
            run: list[Polygon] = []
            for k, i in enumerate(order):
                run.append(self.zones[i].shape)
                last = k + 1 == len(order)
                if last or self.zones[order[k + 1]].inclusion != self.zones[i].inclusion:
                    merged = shapely.union_all(run)
                    region = (region.union(merged) if self.zones[i].inclusion
                              else region.difference(merged))
                    run = []
            shapely.prepare(region)
            self._regions[key] = region
        return self._regions[key]

    @cached_property
    def slabs(self) -> tuple[Slab, ...]:
        """The altitude slabs, lowest first (one unbounded slab when no zone has a band)."""
        levels = np.unique(np.concatenate([self._floors, self._ceilings]))
        levels = levels[np.isfinite(levels)]
        edges = [-math.inf, *levels.tolist(), math.inf]
        slabs = []
        for low, high in itertools.pairwise(edges):
            probe = (low + high) / 2 if math.isfinite(low + high) else (
                high - 1.0 if math.isfinite(high) else (low + 1.0 if math.isfinite(low) else 0.0))
            active = tuple(bool(a) for a in self._active(np.array([probe]))[0])
            slabs.append(Slab(low, high, active, self.region(active)))
        return tuple(slabs)

    # -- queries ------------------------------------------------------------------------

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point (N, 2) or (N, 3) is allowed; boundaries count as inside and a
        NaN point is never allowed."""
        pts = _points(points)
        out = np.zeros(len(pts), bool)
        for region, sel in self._regions_at(pts):
            out[sel] = shapely.intersects_xy(region, pts[sel, 0], pts[sel, 1])
        return out if pts.shape[1] == 2 else out & ~np.isnan(pts[:, 2])

    def free_ahead(self, points: np.ndarray, directions: np.ndarray,
                   reach_m: float) -> np.ndarray:
        """How far each point (N, 2) or (N, 3) can go along its horizontal direction (N, 2)
        before it leaves the allowed region at its altitude: 0 when it is outside already,
        inf when it stays inside for `reach_m`. The straight-line look-ahead of the
        geofence guard, for many points at once."""
        pts = _points(points)
        d = np.asarray(directions, float)[:, :2]
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        rays = shapely.linestrings(np.stack([pts[:, :2], pts[:, :2] + d * reach_m], axis=1))
        out = np.full(len(pts), np.inf)
        for region, sel in self._regions_at(pts):
            outside = shapely.difference(rays[sel], region)
            gap = shapely.distance(shapely.points(pts[sel, :2]), outside)
            out[sel] = np.where(shapely.is_empty(outside), np.inf, gap)
        return out

    def _regions_at(self, pts: np.ndarray) -> Iterator[tuple[BaseGeometry, np.ndarray]]:
        """The allowed region for each group of points with the same zones active at their
        altitude, with the group's mask (one group of all points in 2-D)."""
        if pts.shape[1] == 2:
            yield self.region(), np.ones(len(pts), bool)
            return
        active = self._active(pts[:, 2])
        # Rows packed to bytes and compared as one opaque value each, ~25x faster than
        # np.unique over rows.
        packed = np.ascontiguousarray(np.packbits(active, axis=1))
        keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
        _, first, groups = np.unique(keys, return_index=True, return_inverse=True)
        for g, row in enumerate(first):
            yield self.region(active[row]), groups.ravel() == g

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance from each point to the nearest fence boundary (3-D when the points
        have altitudes): positive inside the allowed space, negative outside."""
        pts = _points(points)
        inside = self.contains(pts)
        if pts.shape[1] == 2:
            return np.where(inside, 1.0, -1.0) * self._boundary_distance(self.region(), pts)
        to_forbidden = np.full(len(pts), np.inf)
        to_allowed = np.full(len(pts), np.inf)
        for slab in self.slabs:
            dz = slab.vertical_gap(pts[:, 2])
            if slab.region.is_empty:
                to_forbidden = np.minimum(to_forbidden, dz)
                continue
            dh = self._boundary_distance(slab.region, pts)
            in_slab = shapely.intersects_xy(slab.region, pts[:, 0], pts[:, 1])
            to_forbidden = np.minimum(to_forbidden, np.hypot(np.where(in_slab, dh, 0.0), dz))
            to_allowed = np.minimum(to_allowed, np.hypot(np.where(in_slab, 0.0, dh), dz))
        return np.where(inside, to_forbidden, -to_allowed)

    def _boundary_distance(self, region: BaseGeometry, pts: np.ndarray) -> np.ndarray:
        if region.is_empty:
            return np.full(len(pts), np.inf)
        tree, _ = self._segment_tree(region)
        finite = np.isfinite(pts[:, :2]).all(axis=1)
        out = np.full(len(pts), np.nan)
        _, dist = tree.query_nearest(shapely.points(pts[finite, :2]), return_distance=True,
                                     all_matches=False)
        out[finite] = dist
        return out

    def _segment_tree(self, region: BaseGeometry) -> tuple[shapely.STRtree, np.ndarray]:
        """An R-tree of the region's boundary segments: nearest-boundary queries for many
        points then cost a logarithmic search each instead of a scan of every vertex."""
        key = id(region)
        if key not in self._trees:
            segments = boundary_segments(region)
            self._trees[key] = (shapely.STRtree(shapely.linestrings(segments)), segments)
        return self._trees[key]

    def time_to_breach(self, position: Sequence[float], velocity: Sequence[float],
                       horizon_s: float) -> float:
        """Time until a vehicle moving in a straight line at `velocity` leaves the allowed
        space (0 when it is already outside; inf when it stays in for `horizon_s`)."""
        p = np.asarray(position, float)
        v = np.asarray(velocity, float)[: len(p)]
        if not self.contains(p[None])[0]:
            return 0.0
        times = [0.0, horizon_s]
        if len(p) == 3 and v[2] != 0.0:
            for slab in self.slabs[1:]:
                t = (slab.low - p[2]) / v[2]
                if 0.0 < t < horizon_s:
                    times.append(t)
        times.sort()
        speed_xy = math.hypot(v[0], v[1])
        for ta, tb in itertools.pairwise(times):
            a, b = p + v * ta, p + v * tb
            if ta > 0.0 and not self.contains(a[None])[0]:
                return ta
            mid = (a + b) / 2
            if speed_xy == 0.0:
                # Straight up or down: the slab edges were crossed at ta; rounding of
                # z0 + v t must not hide the crossing, so test the middle of the window.
                if not self.contains(mid[None])[0]:
                    return ta
                continue
            region = self.region(self._active(mid[2:3])[0]) if len(p) == 3 else self.region()
            outside = LineString([a[:2], b[:2]]).difference(region)
            if not outside.is_empty:
                return ta + shapely.distance(Point(a[:2]), outside) / speed_xy
        return math.inf

    def breach_zone(self, point: Sequence[float]) -> Zone | None:
        """The zone whose rule `point` breaks (None when it is allowed): the highest-priority
        active exclusion containing it, else the inclusion zone it is nearest to."""
        p = np.asarray(point, float)
        if self.contains(p[None])[0]:
            return None
        active = self._active(p[2:3] if len(p) == 3 else None)[0]
        excluding = [z for z, on in zip(self.zones, active, strict=True)
                     if on and not z.inclusion and shapely.intersects_xy(z.shape, p[0], p[1])]
        if excluding:
            return max(excluding, key=lambda z: z.priority)
        inclusions = [z for z in self.zones if z.inclusion]
        if not inclusions:  # outside the padded world
            return None
        return min(inclusions, key=lambda z: (z.shape.distance(Point(p[:2])), -z.priority))

    def check_points(self, points: np.ndarray, names: Sequence[str]) -> None:
        """Raise one GeofenceError listing every point that is not allowed, each with its
        name and the zone that forbids it (e.g. the start inside an exclusion zone)."""
        pts = _points(points)
        problems = []
        for name, p, ok in zip(names, pts, self.contains(pts), strict=True):
            if ok:
                continue
            where = "(" + ", ".join(f"{v:.1f}" for v in p) + ")"
            zone = self.breach_zone(p)
            if zone is None or zone.inclusion:
                problems.append(f"{name} {where} lies outside every inclusion zone")
            else:
                problems.append(f"{name} {where} lies inside exclusion zone {zone.zone_id!r}")
        if problems:
            raise GeofenceError("; ".join(problems))

    def nearest_allowed(self, point: Sequence[float], margin_m: float) -> np.ndarray | None:
        """The nearest point at least `margin_m` inside the fence (3-D when the point has
        an altitude): the shortest way back in for a vehicle that is outside or too close
        to a boundary. None when no such point exists."""
        p = np.asarray(point, float)
        if len(p) == 2:
            return _nearest_in(self.free_space(margin_m), p)
        best, best_d = None, math.inf
        for slab in self.slabs:
            low, high = slab.low + margin_m, slab.high - margin_m
            if low > high:
                continue  # too thin to hold the vehicle with its margin
            z = min(max(p[2], low), high)
            # The slab's own region, eroded: probe inside the slab so no neighbour counts.
            probe = z if low < z < high or not math.isfinite(high - low) else (low + high) / 2
            xy = _nearest_in(self.free_space(margin_m, altitude=probe), p[:2])
            if xy is None:
                continue
            candidate = np.array([xy[0], xy[1], z])
            d = float(np.linalg.norm(candidate - p))
            if d < best_d:
                best, best_d = candidate, d
        return best

    # -- planning -----------------------------------------------------------------------

    def free_space(self, margin_m: float, altitude: float | None = None,
                   vertical_margin_m: float = 0.0) -> BaseGeometry:
        """The allowed region shrunk by `margin_m` (never less: see ERODE_SCALE). With an
        altitude, a vehicle holding it within +-vertical_margin_m must be allowed in every
        slab it touches, so zones it can clear are not obstacles and zones it cannot are."""
        if not (math.isfinite(margin_m) and margin_m >= 0.0):
            raise GeofenceError(f"margin must be finite and non-negative, got {margin_m}")
        if altitude is None:
            masks = [(True,) * len(self.zones)]
        else:
            low, high = altitude - vertical_margin_m, altitude + vertical_margin_m
            masks = [s.active for s in self.slabs if s.low <= high and s.high >= low]
        key = (tuple(masks), margin_m)
        if key not in self._free:
            parts = [self._eroded(m, margin_m) for m in masks]
            free = shapely.intersection_all(parts) if len(parts) > 1 else parts[0]
            shapely.prepare(free)
            self._free[key] = free
        return self._free[key]

    def _eroded(self, active: tuple[bool, ...], margin_m: float) -> BaseGeometry:
        """The allowed region of these active zones shrunk by the margin. When no
        exclusion is overruled by an inclusion, erosion distributes exactly: shrink the
        union of the inclusions and cut out the grown exclusions, which is cheaper than
        eroding the finished region."""
        if margin_m == 0.0:
            return self.region(active)
        on = [z for z, a in zip(self.zones, active, strict=True) if a]
        inclusions = [z for z in on if z.inclusion]
        exclusions = [z for z in on if not z.inclusion]
        d = max(margin_m * ERODE_SCALE, MIN_ERODE_M)
        if inclusions and exclusions and max(z.priority for z in inclusions) > min(
                z.priority for z in exclusions):
            return self.region(active).buffer(-d, quad_segs=ERODE_QUAD_SEGS)
        if self.has_inclusion:
            base = shapely.union_all([z.shape for z in inclusions]) if inclusions else Polygon()
        else:
            base = self._world
        free = base.buffer(-d, quad_segs=ERODE_QUAD_SEGS)
        if exclusions:
            grown = shapely.buffer([z.shape for z in exclusions], d, quad_segs=ERODE_QUAD_SEGS)
            free = free.difference(shapely.union_all(grown))
        return free


def boundary_segments(geometry: BaseGeometry) -> np.ndarray:
    """Every boundary edge of a (multi)polygon as an (E, 2, 2) array."""
    rings = shapely.get_parts(shapely.get_rings(shapely.get_parts(geometry)))
    chunks = []
    for ring in rings:
        xy = shapely.get_coordinates(ring)
        chunks.append(np.stack([xy[:-1], xy[1:]], axis=1))
    return np.concatenate(chunks) if chunks else np.zeros((0, 2, 2))


def _nearest_in(region: BaseGeometry, xy: np.ndarray) -> np.ndarray | None:
    if region.is_empty:
        return None
    if shapely.intersects_xy(region, xy[0], xy[1]):
        return xy[:2].copy()
    return np.asarray(shapely.ops.nearest_points(region, Point(xy[:2]))[0].coords[0])


def _points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, float)
    if pts.ndim == 1:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (N, 2) or (N, 3), got {pts.shape}")
    return pts
