"""The geofence guard: watches one vehicle's estimate against the fence and takes over its
commands when the fence is breached or about to be.

Each tick it works out the margin the vehicle needs (its radius, the distance it covers
before a command takes hold, its stopping distance v^2/2a and k standard deviations of
the position estimate), the signed distance to the
fence and the time to breach at the current velocity, and publishes them as a
GeofenceStatus. Then:

- outside the fence, it steers the vehicle back in by the shortest way (to the nearest
  point a margin inside) and, once in, carries out the breached zone's action;
- inside, when the vehicle would cross the fence before it could stop (time to breach
  within `horizon_s` and the distance to it within the stopping distance), the zone's
  action starts at once: hold, return (along a planned path inside the fence), or land;
- a zone whose action is `report` only raises events.

Its commands go to `/<id>/cmd_failsafe`, which outranks the controller's `/<id>/cmd` in the
simulator, and stay latched until the service `/<id>/failsafe_reset` clears them. A stale
or invalid estimate is never acted on: the guard stops commanding and the vehicle's own
command timeout takes over (hover, brake, no thrust).

Parameters: `vehicle_id`, `vehicle_type`, `model` (the vehicle's model parameters, as the
simulator takes them), `radius_m`, `decel_mps2` (for the stopping distance), `k_sigma`,
`horizon_s`, `rate_hz`, `reaction_s` (decision to action; two ticks by default; radius,
deceleration and k default to the vehicle type's planning envelope),
`stale_after_s`, `home` ([x, y, z]; the first estimate when
empty), `geofence_topic`, `trigger` (clock: tick on the node's clock | estimate: on the
estimates' stamps, for lockstep runs; see fleetbus.nodes.ticking).
Topics: `/geofence` (Geofence, latched) and `/<id>/odometry` in; `/<id>/geofence_status`,
`/<id>/cmd_failsafe` and `/events` out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fleetbus.control import safe_command
from fleetbus.estimation import Estimate
from fleetbus.estimation.drone import rotation
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.messages import GeofenceStatus, Header, Odometry, String, Vector3
from fleetbus.nodes.conversions import (
    COMMANDS,
    command_message,
    fence_from_msg,
)
from fleetbus.nodes.ticking import StepTicker
from fleetbus.nodes.vehicle_node import VehicleNode
from fleetbus.planners import Geofence, GeofenceError, VisibilityPlanner, Zone
from fleetbus.planners.envelope import ENVELOPES
from fleetbus.sim_bridge.vehicles import make_model

REACHED_M = 1.5  # a return path's vertex counts as reached this close


@dataclass
class Failsafe:
    action: str  # hold | return | land | recover
    zone: Zone
    target: np.ndarray
    path: list[np.ndarray] = field(default_factory=list)  # return: vertices still ahead


class GeofenceGuard(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("guard", COMMANDS)
        self.model = make_model(self.kind, self.param("model", {}).value or None)
        # The planner's envelope, so that a vehicle on its route never looks like a breach.
        envelope = ENVELOPES[self.kind]
        self.radius = float(self.param("radius_m", envelope.radius_m, "vehicle radius, m").value)
        self.decel = float(self.param("decel_mps2", envelope.max_decel_mps2).value)
        self.k_sigma = float(self.param("k_sigma", envelope.k_sigma).value)
        self.horizon = float(self.param("horizon_s", 3.0).value)
        self.stale_after = float(self.param("stale_after_s", 0.5).value)
        home = self.param("home", [], "[x, y, z] to return to; the first estimate if []").value
        self.home = np.asarray(home, float) if home else None
        self.fence: Geofence | None = None
        self.estimate: Estimate | None = None
        self.failsafe: Failsafe | None = None
        self.warned: set[str] = set()  # conditions already reported, reported again on change
        self.subscribe(self.param("geofence_topic", "/geofence").value, GeofenceMsg,
                       self._on_fence)
        self.subscribe(f"/{self.vehicle}/odometry", Odometry, self._on_odometry, conflate=True)
        self.status = self.publisher(f"/{self.vehicle}/geofence_status", GeofenceStatus,
                                     latched=True)
        self.command = self.publisher(f"/{self.vehicle}/cmd_failsafe", COMMANDS[self.kind])
        self.service(f"/{self.vehicle}/failsafe_reset", String, String, self._reset)
        rate = float(self.param("rate_hz", 20.0).value)
        self.reaction = float(self.param("reaction_s", 2.0 / rate, "from a decision to the "
                                         "vehicle acting on it: a tick and a control "
                                         "period").value)
        self.tick_ns = 0
        self.ticker = StepTicker.from_params(self, rate, self._tick)

    # -- inputs -------------------------------------------------------------------------

    def _on_fence(self, msg: GeofenceMsg) -> None:
        try:
            self.fence = fence_from_msg(msg)
        except GeofenceError as exc:  # keep guarding with the fence we had
            self._count("invalid_geofence", f"/geofence rejected: {exc}")
            self._event("invalid_geofence", "error", f"geofence rejected: {exc}")
            return
        self.ticker.retry()

    def _on_odometry(self, msg: Odometry) -> None:
        if self.take_estimate(msg) is not None:
            self.ticker.estimate(msg.header.stamp_ns)

    def _reset(self, request: String) -> String:
        previous = self.failsafe.action if self.failsafe else "none"
        self.failsafe = None
        self.warned.clear()
        self._event("failsafe_cleared", "info", f"failsafe {previous} cleared by request "
                    f"{request.data!r}")
        return String(data=f"cleared {previous}")

    # -- the guard ----------------------------------------------------------------------

    def _tick(self, stamp_ns: int) -> None:
        self.tick_ns = stamp_ns
        now = stamp_ns * 1e-9
        est, fence = self.estimate, self.fence
        if fence is None and est is not None:
            self.ticker.hold(stamp_ns)  # judged once the fence is here
            return
        if fence is None or est is None:
            return
        if now - est.stamp_s > self.stale_after:
            self._once("stale", "estimate_stale", "error", f"no fresh estimate for "
                       f"{now - est.stamp_s:.2f} s: not acting on it")
            return
        self.warned.discard("stale")
        p = self._point(est.position)
        v = self._point(rotation(est.orientation) @ est.velocity_body)
        speed = float(np.linalg.norm(v))
        sigma = math.sqrt(max(np.linalg.eigvalsh(est.pose_covariance[:2, :2]).max(), 0.0))
        static_margin = self.radius + self.k_sigma * sigma
        # Until a command of ours takes hold the vehicle keeps going: the estimate's age,
        # then up to one tick of ours and one control period of the vehicle.
        lag = max(now - est.stamp_s, 0.0) + self.reaction
        margin = static_margin + speed * lag + speed**2 / (2 * self.decel)
        distance = float(fence.signed_distance(p[None])[0])
        ttb = fence.time_to_breach(p, v, self.horizon)
        inside = distance >= 0.0
        zone = fence.breach_zone(p) if not inside else (
            fence.breach_zone(p + v * (ttb + 1e-3)) if math.isfinite(ttb) else None)
        if self.failsafe is None and zone is not None:
            self._trigger(fence, zone, p, inside, ttb, speed, static_margin, margin)
        elif self.failsafe is not None:
            self._advance(fence, p, distance, static_margin)
        if inside and self.failsafe is None:
            self.warned.discard("breach")
        self._command(est)
        self.status.publish(GeofenceStatus(
            header=Header(stamp_ns=stamp_ns, frame_id="map"), vehicle_id=self.vehicle,
            inside=inside, signed_distance_m=distance, margin_m=margin, time_to_breach_s=ttb,
            zone_id=zone.zone_id if zone else (self.failsafe.zone.zone_id if self.failsafe
                                               else ""),
            failsafe=self.failsafe.action if self.failsafe else "none",
            target=_vec(self.failsafe.target) if self.failsafe else Vector3()))

    def _trigger(self, fence: Geofence, zone: Zone, p: np.ndarray, inside: bool, ttb: float,
                 speed: float, static_margin: float, stopping: float) -> None:
        if not inside:
            self._once("breach", "breach", "critical",
                       f"outside the fence: zone {zone.zone_id!r} breached", zone)
            if zone.action != "report":
                self._start(fence, "recover", zone, p, static_margin)
            return
        if ttb * speed <= stopping:  # it would cross before it could stop
            self._once("predicted", "predicted_breach", "warn",
                       f"zone {zone.zone_id!r} breached in {ttb:.2f} s at the current "
                       f"velocity", zone)
            if zone.action != "report":
                self._start(fence, zone.action, zone, p, static_margin)
        else:
            self.warned.discard("predicted")

    def _start(self, fence: Geofence, action: str, zone: Zone, p: np.ndarray,
               margin: float) -> None:
        target, path = p.copy(), []
        if action == "recover":
            nearest = fence.nearest_allowed(p, margin)
            if nearest is None:
                action = "hold"  # nowhere to go: stop rather than wander
            else:
                target = nearest
        elif action == "return":
            path = self._path_home(fence, p, margin)
            if path is None:
                action = "hold"
            else:
                target = path[0]
        self.failsafe = Failsafe(action, zone, target, path or [])
        self._event("failsafe", "critical", f"failsafe {action} for zone {zone.zone_id!r}",
                    zone, {"action": action})

    def _advance(self, fence: Geofence, p: np.ndarray, distance: float, margin: float) -> None:
        fs = self.failsafe
        if fs.action == "recover" and distance >= margin:
            self._event("recovered", "info", f"back inside the fence, {distance:.2f} m from "
                        f"its boundary", fs.zone)
            if fs.zone.action == "report":
                self.failsafe = None
            else:
                self._start(fence, fs.zone.action, fs.zone, p, margin)
        elif fs.action == "return" and fs.path and np.linalg.norm(
                (fs.path[0] - p)[:2]) < REACHED_M:
            fs.path.pop(0)
            fs.target = fs.path[0] if fs.path else fs.target

    def _path_home(self, fence: Geofence, p: np.ndarray, margin: float) -> list | None:
        altitude = float(p[2]) if len(p) == 3 else None
        try:
            free = fence.free_space(margin, altitude=altitude, vertical_margin_m=margin)
            result = VisibilityPlanner(free).plan(p[:2], self.home[:2])
        except ValueError as exc:
            result = None
            self._count("return_unplanned", f"no way home: {exc}")
        if result is None or not result.ok:
            self._event("return_unplanned", "error", "no path home inside the fence: "
                        + (result.message if result else "no free space"))
            return None
        z = [altitude] if altitude is not None else []
        return [np.array([*xy, *z]) for xy in result.points[1:]]

    def _command(self, est: Estimate) -> None:
        fs = self.failsafe
        if fs is None:
            return
        action = "hold" if fs.action == "return" and not fs.path else fs.action
        target = fs.target if len(fs.target) == 3 or self.kind != "quadrotor" else np.array(
            [*fs.target, est.position[2]])
        u = safe_command(self.kind, self.model, est, action, target)
        self.command.publish(command_message(self.kind, u, self.tick_ns))

    # -- helpers ------------------------------------------------------------------------

    def _point(self, xyz: np.ndarray) -> np.ndarray:
        """3-D for drones (altitude bands apply), 2-D for ships and cars."""
        return np.asarray(xyz, float)[: 3 if self.kind == "quadrotor" else 2]

    def _once(self, key: str, kind: str, severity: str, message: str,
              zone: Zone | None = None) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self._event(kind, severity, message, zone)

    def _event(self, kind: str, severity: str, message: str, zone: Zone | None = None,
               data: dict[str, str] | None = None) -> None:
        details = dict(data or {})
        if zone is not None:
            details.update(zone_id=zone.zone_id, zone_action=zone.action)
        self.vehicle_event(kind, severity, message, details)


def _vec(p: np.ndarray) -> Vector3:
    return Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2]) if len(p) > 2 else 0.0)
