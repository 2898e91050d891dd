"""The planner node: a vehicle's mission and the geofence in, its route and corridor out.

It plans a mission from the vehicle's estimate at the mission's stamp (so a lockstep run
plans from the same start whenever the message reaches it) through the mission's
waypoints (and back home when the mission says so), and plans again when the mission
changes or the fence changes in a way that touches the route: a new no-go zone away
from the route keeps it, because it is still the shortest. The path and corridor carry
the stamp of the estimate they start from; a mission that cannot be planned becomes an
empty path (hold where you are), never the old path left in force.

Parameters: `vehicle_id`, `vehicle_type`, `envelope` (VehicleEnvelope fields; defaults
per vehicle type below), `vertical_margin_m` (drones: how far above and below the
mission's altitudes the fence must allow), `path_step_m` (spacing of the published
poses), `geofence_topic`.
Topics: `/geofence` (Geofence, latched), `/<id>/mission` (Mission, latched) and
`/<id>/odometry` in; `/<id>/path` (Path, latched), `/<id>/corridor` (Corridor, latched)
and `/events` out.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import fields, replace

import numpy as np

from fleetbus.estimation import Estimate
from fleetbus.estimation.estimate import yaw_quaternion
from fleetbus.messages import (
    Corridor,
    CorridorCell,
    Header,
    Mission,
    Odometry,
    Path,
    Pose,
    Quaternion,
    Vector3,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.nodes.conversions import fence_from_msg
from fleetbus.nodes.vehicle_node import VehicleNode
from fleetbus.planners import GeofenceError
from fleetbus.planners.envelope import ENVELOPES, VehicleEnvelope
from fleetbus.planners.route import Route, RoutePlanner

RECENT = 250  # estimates kept: 5 s at the fusion's 50 Hz
STAMP_TOLERANCE_S = 1e-6  # stamps travel as ns and come back as float seconds
HOLD_RADIUS_M = 0.5  # goals this close to the vehicle mean "stay here", not a route

class PlannerNode(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("plan for", ENVELOPES)
        given = self.param("envelope", {}, "VehicleEnvelope fields").value
        unknown = set(given) - {f.name for f in fields(VehicleEnvelope)}
        if unknown:
            raise ValueError(f"planner: envelope has no field {sorted(unknown)}")
        self.envelope = replace(ENVELOPES[self.kind], **given)
        self.vertical_margin = float(self.param("vertical_margin_m", 2.0).value)
        self.step = float(self.param("path_step_m", 1.0).value)
        self.fence = None
        self.mission: Mission | None = None
        self.estimate: Estimate | None = None
        self.planner: RoutePlanner | None = None
        self.pending = False  # a plan is owed as soon as there is an estimate
        self.for_mission = False  # the plan owed is for a new mission (not a new fence)
        # Recent estimates: a mission is planned from the estimate of its own stamp, so
        # a lockstep run plans from the same start whenever the mission reaches us.
        self.recent: collections.deque[Estimate] = collections.deque(maxlen=RECENT)
        self.subscribe(self.param("geofence_topic", "/geofence").value, GeofenceMsg,
                       self._on_fence)
        self.subscribe(f"/{self.vehicle}/mission", Mission, self._on_mission)
        self.subscribe(f"/{self.vehicle}/odometry", Odometry, self._on_odometry)
        self.path = self.publisher(f"/{self.vehicle}/path", Path, latched=True)
        self.corridor = self.publisher(f"/{self.vehicle}/corridor", Corridor, latched=True)
        self.plans = 0
        self.plan_stamp_ns = 0  # the stamp of the estimate the last plan started from

    def _on_fence(self, msg: GeofenceMsg) -> None:
        try:
            fence = fence_from_msg(msg)
        except GeofenceError as exc:
            self._count("invalid_geofence", f"/geofence rejected: {exc}")
            self.vehicle_event("plan_failed", "error", f"geofence rejected, planning on the old "
                        f"one: {exc}")
            return
        routed = self.planner is not None and self.planner.route is not None
        if routed and not self.planner.update_fence(fence):
            self.vehicle_event("route_kept", "info", "the fence changed away from the route: it is "
                        "still the shortest")
            self.fence = fence
            return
        self.fence = fence
        self.planner = None
        self._request(for_mission=False)

    def _on_mission(self, msg: Mission) -> None:
        if not msg.waypoints:
            self._count("invalid_mission", f"mission {msg.mission_id!r} has no waypoints")
            return
        self.mission = msg
        self.planner = None
        self._request(for_mission=True)

    def _on_odometry(self, msg: Odometry) -> None:
        estimate = self.read_estimate(msg)
        if estimate is None:
            return
        self.estimate = estimate
        self.recent.append(estimate)
        if self.pending:
            self._plan()

    def _request(self, for_mission: bool) -> None:
        self.pending = True
        self.for_mission = for_mission
        if self.estimate is not None:
            self._plan()

    def _start(self) -> Estimate | None:
        """The estimate to plan from: for a new mission, that of the mission's own instant
        (the last at or before its stamp, once a later one shows that none is still to
        come); else, or for a mission without a stamp, the latest. None: not here yet."""
        stamp_ns = self.mission.header.stamp_ns if self.for_mission else 0
        if stamp_ns <= 0:
            return self.estimate
        stamp = stamp_ns * 1e-9
        if not self.recent or self.recent[-1].stamp_s < stamp - STAMP_TOLERANCE_S:
            return None
        before = [e for e in self.recent if e.stamp_s <= stamp + STAMP_TOLERANCE_S]
        return before[-1] if before else self.recent[0]

    def _plan(self) -> None:
        if self.fence is None or self.mission is None or self.estimate is None:
            return
        estimate = self._start()
        if estimate is None:
            return
        self.pending = False
        self.plan_stamp_ns = round(estimate.stamp_s * 1e9)
        start = estimate.position
        goals = [np.array([w.position.x, w.position.y, w.position.z])
                 for w in self.mission.waypoints]
        if self.mission.return_home:
            goals.append(start.copy())
        drone = self.kind == "quadrotor"
        dims = 3 if drone else 2
        if all(np.linalg.norm(g[:dims] - start[:dims]) < HOLD_RADIUS_M for g in goals):
            # a mission to where the vehicle is (a hold): no route to plan, only to stop
            self._publish_hold()
            return
        try:
            points = np.vstack(goals) if drone else np.vstack(goals)[:, :2]
            self.fence.check_points(points, [f"waypoint {k}" for k in range(len(goals))])
        except GeofenceError as exc:
            self._count("invalid_mission", str(exc))
            self._plan_failed(str(exc), "invalid_mission")
            return
        altitude = margin = None
        if drone:
            heights = [start[2], *(g[2] for g in goals)]
            altitude = (max(heights) + min(heights)) / 2
            margin = (max(heights) - min(heights)) / 2 + self.vertical_margin
        if self.planner is None:
            self.planner = RoutePlanner(self.fence, self.envelope, altitude, margin or 0.0)
        began = time.perf_counter()
        speeds = [w.speed_mps for w in self.mission.waypoints] + (
            [0.0] if self.mission.return_home else [])
        tolerances = [w.acceptance_radius_m for w in self.mission.waypoints]
        route = self.planner.plan(start, goals, v_start=float(estimate.velocity_body[0]),
                                  leg_speeds=speeds, tolerances_m=tolerances)
        elapsed_ms = (time.perf_counter() - began) * 1e3
        if not route.ok:
            self._count("plan_failed", route.message)
            self._plan_failed(f"{route.status}: {route.message}", route.status)
            return
        self.plans += 1
        self._publish(route)
        self.vehicle_event("planned", "info" if not route.message else "warn",
                    f"mission {self.mission.mission_id!r}: {route.length_m:.1f} m in "
                    f"{elapsed_ms:.1f} ms" + (f"; {route.message}" if route.message else ""),
                    {"length_m": f"{route.length_m:.3f}", "plan_ms": f"{elapsed_ms:.2f}",
                     "clearance_m": f"{route.clearance_m:.3f}"})

    def _plan_failed(self, why: str, status: str) -> None:
        """Say why the mission cannot be planned (the mission manager fails it on this
        event, which names the mission and the stamp of its leg), and hold."""
        self.vehicle_event("plan_failed", "error", f"mission {self.mission.mission_id!r}: "
                           f"{why}: holding",
                           {"mission_id": self.mission.mission_id, "status": status,
                            "mission_stamp_ns": str(self.mission.header.stamp_ns)})
        self._publish_hold()

    def _publish_hold(self) -> None:
        """An empty path (and corridor): the controller stops the vehicle where it is."""
        header = Header(stamp_ns=self.plan_stamp_ns, frame_id="map")
        self.path.publish(Path(header=header))
        self.corridor.publish(Corridor(header=header))
        self.vehicle_event("planned", "info", f"mission {self.mission.mission_id!r}: "
                           "hold where it is")

    def _publish(self, route: Route) -> None:
        header = Header(stamp_ns=self.plan_stamp_ns, frame_id="map")
        sm = route.smoothed
        every = max(1, round(self.step / max(float(np.median(np.diff(sm.s))), 1e-9)))
        keep = np.unique(np.r_[np.arange(0, len(sm.s), every), len(sm.s) - 1])
        z = route.altitude_m if route.altitude_m is not None else 0.0
        poses = [Pose(position=Vector3(x=float(x), y=float(y), z=float(z)),
                      orientation=Quaternion(**dict(zip("wxyz", yaw_quaternion(float(h)).tolist(),
                                                        strict=True))))
                 for (x, y), h in zip(sm.points[keep], sm.heading[keep], strict=True)]
        self.path.publish(Path(header=header, poses=poses,
                               speeds_mps=[float(v) for v in route.speeds[keep]]))
        floor, ceiling = ((z - self.planner.vertical_margin_m, z + self.planner.vertical_margin_m)
                          if route.altitude_m is not None else (-math.inf, math.inf))
        self.corridor.publish(Corridor(header=header, floor_m=floor, ceiling_m=ceiling, cells=[
            CorridorCell(a_x=c.A[:, 0].tolist(), a_y=c.A[:, 1].tolist(), b=c.b.tolist(),
                         segment=c.segment) for c in route.corridor]))
