"""A mission's route: the shortest path through its waypoints inside the fence, rounded to
what the vehicle can steer, with a speed profile and a convex corridor for the controller.

The margin a route keeps from the fence is the vehicle's radius, k standard deviations of
its position estimate and its stopping distance at top speed, and its speed profile keeps
the geofence guard's margin free straight ahead at every point (see envelope.py), so a
vehicle following its route never looks like a breach to the guard.

A vehicle that starts inside its margin (placed there, or pushed by wind) is not refused:
around the start, the route may use the free space at the start's own depth and eases out
to the full margin at a shallow angle. A vehicle that cannot turn on the spot gets no route
with a corner its turn radius cannot take within its tracking tolerance (status
"too_tight", naming the bend), even after re-planning with more clearance.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry import LineString, Point, box
from shapely.geometry.base import BaseGeometry

from fleetbus.planners.corridor import CorridorCell, convex_corridor
from fleetbus.planners.envelope import VehicleEnvelope
from fleetbus.planners.geofence import ERODE_QUAD_SEGS, ERODE_SCALE, Geofence
from fleetbus.planners.smoothing import SmoothedPath, fillet_path, speed_profile
from fleetbus.planners.visibility import PlanResult, Status, VisibilityPlanner

RouteStatus = Status | Literal["too_tight"]

CLEARANCE_ATTEMPTS = 3  # re-plans with more clearance before corners are left sharp
CLEARANCE_SLACK = 1.1  # clearance asked for, per clearance a corner needed
# A vehicle that starts closer to the fence than its margin gets room at its own depth
# around the start, so long that a route easing back to the full margin turns by at most
# this slope where the room ends (a car takes that bend at any speed).
START_ROOM_SLOPE = 0.1
START_ROOM_DEPTH = 0.95  # of the start's own clearance: the start stays strictly inside


@dataclass(frozen=True, eq=False)
class Route:
    status: RouteStatus
    message: str = ""
    polyline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # shortest, (K, 2)
    smoothed: SmoothedPath | None = None
    speeds: np.ndarray = field(default_factory=lambda: np.zeros(0))  # m/s per smoothed sample
    corridor: tuple[CorridorCell, ...] = ()
    clearance_m: float = 0.0  # extra clearance the corners needed
    altitude_m: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def length_m(self) -> float:
        return float(np.sum(np.hypot(*np.diff(self.polyline, axis=0).T)))


class RoutePlanner:
    """Plans routes for one vehicle in one fence at one altitude (None for ships and cars;
    for drones the altitude band +-vertical_margin_m decides which zones are obstacles)."""

    def __init__(self, fence: Geofence, vehicle: VehicleEnvelope,
                 altitude_m: float | None = None, vertical_margin_m: float = 0.0) -> None:
        self.vehicle = vehicle
        self.altitude_m = altitude_m
        self.vertical_margin_m = vertical_margin_m
        self.fence = fence
        self._free: dict[float, BaseGeometry] = {}
        self.route: Route | None = None

    def free_space(self, clearance_m: float = 0.0) -> BaseGeometry:
        if clearance_m not in self._free:
            self._free[clearance_m] = self.fence.free_space(
                self.vehicle.margin_m + clearance_m, self.altitude_m, self.vertical_margin_m)
        return self._free[clearance_m]

    def space(self, start: np.ndarray, clearance_m: float = 0.0) -> BaseGeometry:
        """Where a route from `start` may go: the free space at the margin plus
        clearance_m, and, when the start is closer to the fence than that (placed there,
        or pushed by wind or a current), the free space at the start's own depth in a box
        around it. The box reaches far enough that the route eases back out to the full
        margin at a shallow angle, rather than the start being refused."""
        free = self.free_space(clearance_m)
        if free.covers(Point(start)):
            return free
        depth = self._depth(start) * START_ROOM_DEPTH / ERODE_SCALE
        if depth <= 0.0:
            return free  # outside the fence, or on its edge: the start stays refused
        reach = (self.vehicle.margin_m + clearance_m - depth) / START_ROOM_SLOPE
        x, y = start
        room = self.fence.free_space(depth, self.altitude_m, self.vertical_margin_m)
        return shapely.union(free, room.intersection(box(x - reach, y - reach,
                                                         x + reach, y + reach)))

    def _depth(self, point: np.ndarray) -> float:
        """How far inside the fence the point lies (0 outside), at the planner's altitude."""
        region = self.fence.free_space(0.0, self.altitude_m, self.vertical_margin_m)
        p = Point(point)
        return float(region.boundary.distance(p)) if region.covers(p) else 0.0

    def plan(self, start: Sequence[float], waypoints: Sequence[Sequence[float]],
             v_start: float = 0.0, leg_speeds: Sequence[float] | None = None,
             tolerances_m: Sequence[float] | None = None) -> Route:
        """The route from start through every waypoint in order (ENU x, y). leg_speeds:
        the most speed on the way to each waypoint (0: the vehicle's own limits);
        tolerances_m: how close the route must pass each waypoint (a vehicle that turns on
        the spot stops and turns at one its rounded corner would miss by more)."""
        stops = [np.asarray(p, float)[:2] for p in (start, *waypoints)]
        clearance, best = 0.0, None
        for _ in range(CLEARANCE_ATTEMPTS):
            legs = self._legs(stops, self.space(stops[0], clearance))
            if not all(leg.ok for leg in legs):
                failed = next(leg for leg in legs if not leg.ok)
                if best is None:
                    self.route = Route(failed.status, failed.message, altitude_m=self.altitude_m)
                    return self.route
                break  # the extra clearance closed a passage: keep the sharper route
            polyline = _join(legs)
            smoothed = self._smooth(polyline, stops[0],
                                    self._exact_waypoints(legs, tolerances_m))
            best = (polyline, smoothed, clearance)
            needed = [c.needed_clearance_m for c in smoothed.tight_corners
                      if c.reason == "blocked"]
            if smoothed.ok or not needed or self.vehicle.turn_radius_m == 0.0:
                break  # a vehicle that turns on the spot takes a sharp corner at a stop
            clearance = max(clearance, max(needed)) * CLEARANCE_SLACK
        polyline, smoothed, clearance = best
        v = self.vehicle
        undrivable = self._undrivable(polyline, smoothed)
        if undrivable:
            self.route = Route("too_tight", undrivable, altitude_m=self.altitude_m)
            return self.route
        speeds = speed_profile(smoothed.s, smoothed.curvature, v.max_speed_mps,
                               v.max_lateral_accel_mps2, v.max_accel_mps2, v.max_decel_mps2,
                               v_start=max(v_start, 0.0), v_end=0.0,
                               v_cap=np.minimum(v.safe_speed(self._free_ahead(smoothed)),
                                                _leg_caps(smoothed, stops, leg_speeds)))
        corridor = convex_corridor(polyline, self.space(stops[0]), v.corridor_half_width_m)
        message = "" if smoothed.ok or v.turn_radius_m == 0.0 else (
            f"{len(smoothed.tight_corners)} kink(s) sharper than a turn radius of "
            f"{v.turn_radius_m} m allows, each within the tracking tolerance: the vehicle "
            "slows to a stop there")
        self.route = Route("ok", message, polyline, smoothed, speeds, tuple(corridor),
                           clearance, self.altitude_m)
        return self.route

    def _undrivable(self, polyline: np.ndarray, smoothed: SmoothedPath) -> str:
        """Why a vehicle that cannot turn on the spot cannot drive the path ("" when it
        can): a corner left sharp that its turn radius would cut by more than the tracking
        tolerance. (A smaller kink it takes slowly, within the tolerance.)"""
        v = self.vehicle
        worst = max((c.needed_clearance_m for c in smoothed.tight_corners), default=0.0)
        if v.turn_radius_m == 0.0 or worst <= v.tracking_tolerance_m:
            return ""
        x, y = polyline[next(c.index for c in smoothed.tight_corners
                             if c.needed_clearance_m == worst)]
        return (f"the bend at ({x:.1f}, {y:.1f}) is too tight for a turn radius of "
                f"{v.turn_radius_m} m within the margin of {v.margin_m:.1f} m: the turn "
                f"would cut it by {worst:.2f} m (tolerance {v.tracking_tolerance_m} m), "
                "also when planned with more clearance")

    def _free_ahead(self, smoothed: SmoothedPath) -> np.ndarray:
        """Free space along the path's heading at each sample, in the fence itself (what
        the guard looks at), as far as the guard's margin at top speed could reach."""
        v = self.vehicle
        reach = (v.static_margin_m + v.tracking_tolerance_m + v.max_speed_mps * v.reaction_s
                 + v.max_speed_mps**2 / (2.0 * v.max_decel_mps2))
        points = smoothed.points if self.altitude_m is None else np.column_stack(
            [smoothed.points, np.full(len(smoothed.points), self.altitude_m)])
        directions = np.column_stack([np.cos(smoothed.heading), np.sin(smoothed.heading)])
        return self.fence.free_ahead(points, directions, reach)

    def _legs(self, stops: list[np.ndarray], free: BaseGeometry) -> list[PlanResult]:
        try:
            planner = VisibilityPlanner(free)
        except ValueError as exc:
            return [PlanResult("no_path", message=str(exc))]
        legs = []
        for k, (a, b) in enumerate(itertools.pairwise(stops)):
            leg = planner.plan(a, b)
            if not leg.ok:
                what = "start" if k == 0 and leg.status == "start_blocked" else f"waypoint {k}"
                return [PlanResult(leg.status, message=f"leg {k + 1} ({what}): {leg.message}")]
            legs.append(leg)
        return legs

    def _smooth(self, polyline: np.ndarray, start: np.ndarray,
                exact: Sequence[int] = ()) -> SmoothedPath:
        """Corners rounded to the turn radius; a vehicle that can turn on the spot gets
        the radius it can fly at top speed where it fits, and a stop where it does not or
        where it must pass a vertex exactly."""
        return fillet_path(polyline, self.space(start), self._radius(), keep_sharp=exact)

    def _radius(self) -> float:
        v = self.vehicle
        return v.turn_radius_m or v.max_speed_mps**2 / v.max_lateral_accel_mps2

    def _exact_waypoints(self, legs: list[PlanResult],
                         tolerances_m: Sequence[float] | None) -> list[int]:
        """The polyline's waypoint vertices a rounded corner would miss by more than their
        tolerance, for a vehicle that turns on the spot (one that cannot must round
        them). A corner turning by theta is rounded to pass R*(1/cos(theta/2) - 1) from
        its vertex."""
        if self.vehicle.turn_radius_m > 0.0 or not tolerances_m:
            return []
        ends = np.cumsum([len(leg.points) - 1 for leg in legs])
        polyline = _join(legs)
        exact = []
        for v, tolerance in zip(ends[:-1], tolerances_m, strict=False):
            a, b = polyline[v] - polyline[v - 1], polyline[v + 1] - polyline[v]
            cos = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12)
            half = math.acos(min(max(cos, -1.0), 1.0)) / 2.0
            miss = math.inf if half >= math.pi / 2 - 1e-9 else self._radius() * (
                1.0 / math.cos(half) - 1.0)
            if miss > tolerance:
                exact.append(int(v))
        return exact

    def update_fence(self, fence: Geofence) -> bool:
        """Adopt a new fence. Returns whether the current route must be re-planned: not
        when the change only adds exclusion zones that the route keeps clear of, since
        an added obstacle cannot make a shorter route (the route stays optimal), and then
        the free space is patched rather than rebuilt."""
        old = {z.zone_id: z for z in self.fence.zones}
        new = {z.zone_id: z for z in fence.zones}
        added = [new[i] for i in new.keys() - old.keys()]
        unchanged = all(new.get(i) == z for i, z in old.items())
        top_inclusion = max((z.priority for z in fence.zones if z.inclusion), default=-math.inf)
        additive = unchanged and all(not z.inclusion and z.priority >= top_inclusion
                                     for z in added)
        self.fence = fence
        if not additive:
            self._free.clear()
            return True
        grown = [self._grown(z) for z in added if self._in_band(z)]
        if not grown:
            return False
        obstacle = shapely.union_all(grown)
        self._free = {c: free.difference(self._grown_by(obstacle, c))
                      for c, free in self._free.items()}
        if self.route is None or not self.route.ok:
            return True
        return bool(LineString(self.route.smoothed.points).intersects(obstacle)) or any(
            cell.polygon.intersects(obstacle) for cell in self.route.corridor)

    def _in_band(self, zone) -> bool:
        if self.altitude_m is None:
            return True
        low = self.altitude_m - self.vertical_margin_m
        high = self.altitude_m + self.vertical_margin_m
        return zone.floor_m <= high and zone.ceiling_m >= low

    def _grown(self, zone) -> BaseGeometry:
        return zone.shape.buffer(self.vehicle.margin_m * ERODE_SCALE, quad_segs=ERODE_QUAD_SEGS)

    @staticmethod
    def _grown_by(obstacle: BaseGeometry, clearance_m: float) -> BaseGeometry:
        return obstacle.buffer(clearance_m * ERODE_SCALE, quad_segs=ERODE_QUAD_SEGS) if (
            clearance_m > 0.0) else obstacle


def _leg_caps(smoothed: SmoothedPath, stops: list[np.ndarray],
              leg_speeds: Sequence[float] | None) -> np.ndarray:
    """Per sample, the speed asked for on the leg it lies on (inf where none is): each
    stop is placed at its nearest sample, searching forward from the previous stop's."""
    caps = np.full(len(smoothed.s), np.inf)
    if not leg_speeds or not any(v > 0.0 for v in leg_speeds):
        return caps
    begin = 0
    for stop, speed in zip(stops[1:], leg_speeds, strict=True):
        end = begin + int(np.argmin(np.hypot(*(smoothed.points[begin:] - stop).T)))
        if speed > 0.0:
            caps[begin:end + 1] = np.minimum(caps[begin:end + 1], speed)
        begin = end
    return caps


def _join(legs: list[PlanResult]) -> np.ndarray:
    """The legs' polylines end to end, each joint once."""
    parts = [legs[0].points] + [leg.points[1:] for leg in legs[1:]]
    return np.vstack(parts)
