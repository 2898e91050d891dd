"""The mission manager: sequences one vehicle's waypoints for its planner, steps aside while
the geofence guard has the vehicle, carries out an operator's orders, and reports progress.

The mission comes from a GeoJSON file (fleetbus.missions.plan), placed in the frame of the
geofence it flies in (so the manager waits for the fence), or from an inline list of ENU
waypoints (no fence needed). It starts `start_delay_s` after the first estimate, or on a
"start" order when `autostart` is false. What the planner gets on `/<id>/mission`:

- the mission in legs: up to the next waypoint with a hold (the planner stops a vehicle
  only at the end of its path), the next leg once the hold is over;
- the way home as an explicit last waypoint, never `return_home`: the planner would take
  that as "back to where this plan starts", which after a re-plan is not home;
- holds (a hold order, a failed mission, "land" for a surface vehicle) as one waypoint at
  the current position; a return as one waypoint at home (the first estimate's position);
  a drone's landing as one waypoint at the current x, y and z = 0.

A GeofenceStatus with a failsafe puts the mission in the "failsafe" state: the guard
commands the vehicle and the manager sends nothing. Once the guard lets go, whatever was
going on resumes from where the vehicle is (the remaining waypoints, the return, ...).
Orders received meanwhile are taken, and carried out then.

A leg the planner cannot plan (no way through, a bend too tight for a car, a waypoint
within the margin) fails the mission, with the planner's reason; the planner holds the
vehicle meanwhile.

Orders (`/<id>/mission_command`): start (from the first waypoint when idle, completed or
failed; as resume while holding, returning or landing), resume (the remaining waypoints),
hold, return, land. Each one is answered with an event saying whether it was carried out.

The manager works in steps (fleetbus.nodes.ticking): on its clock, or with `trigger:
estimate` on the estimates' stamps, once the inputs it awaits (the guard's status) have
arrived for the same instant. Every decision and stamp is at a step's time, so a lockstep
run repeats exactly; the hold at a waypoint is timed by the estimates' stamps.

Parameters: `vehicle_id`, `vehicle_type`, `mission` (GeoJSON file, relative to the working
directory) or `waypoints` (inline ENU list of {x, y, z, speed_mps, acceptance_radius_m,
hold_s, yaw_rad}): exactly one; `return_home` (default: the file's, else false),
`geofence_topic` (/geofence), `start_delay_s` (0), `timeout_s` (0: none; sim seconds from
the start), `autostart` (true), `rate_hz` (10), `trigger` (clock | estimate), `await`
([geofence_status] or []).
Topics: `/<id>/odometry`, `/<id>/geofence_status`, `/<id>/mission_command`, the
geofence (GeoJSON missions only) and the planner's "plan_failed" events on `/events` in;
`/<id>/mission` (Mission, latched), `/<id>/mission_status` (MissionStatus, latched, every
step) and `/events` (kind "mission", data["event"] saying what happened) out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fleetbus.estimation import Estimate
from fleetbus.messages import (
    Event,
    GeofenceStatus,
    Header,
    Mission,
    MissionCommand,
    MissionStatus,
    Odometry,
    Vector3,
    Waypoint,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.missions import GeoMission, MissionError, MissionTracker, enu_mission, read_mission
from fleetbus.nodes.conversions import COMMANDS
from fleetbus.nodes.ticking import StepTicker
from fleetbus.nodes.vehicle_node import VehicleNode

# What the vehicle is doing (the manager's mode) as MissionStatus states; "mission" is
# "returning" on the way home, and any mode is "failsafe" while the guard has the vehicle.
STATES = {"idle": "idle", "mission": "active", "hold": "holding", "return": "returning",
          "land": "landing", "completed": "completed", "failed": "failed"}
ERRANDS = ("hold", "return", "land", "failed")  # modes that send a one-waypoint mission


class MissionManager(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("run the mission of", COMMANDS)
        path = self.param("mission", "", "GeoJSON mission file").value
        inline = self.param("waypoints", [], "inline ENU waypoints: [{x, y, z, speed_mps, "
                            "acceptance_radius_m, hold_s, yaw_rad}]").value
        self.geo, self.mission = self._load(path, inline)
        self.return_home = bool(self.param(
            "return_home", self.geo.return_home if self.geo else False,
            "come back to the first estimate's position at the end").value)
        self.start_delay = float(self.param("start_delay_s", 0.0, "sim s after the first "
                                            "estimate").value)
        self.timeout = float(self.param("timeout_s", 0.0, "sim s to complete; 0: none").value)
        self.go = bool(self.param("autostart", True, "false: wait for a start order").value)
        if self.mission is not None:
            self.mission.return_home = self.return_home
        self.origin: tuple[float, float, float] | None = None  # the fence's, for files
        self.mode = "idle"
        self.note = ""  # why the mode is what it is, for MissionStatus.message
        self.failsafe = "none"  # the guard's, while it has the vehicle
        self.failsafe_zone = ""
        self.failsafes = 0
        self.estimate: Estimate | None = None
        self.home: np.ndarray | None = None
        self.first_estimate_s = math.nan
        self.started_s = math.nan
        self.tracker: MissionTracker | None = None  # the mission's progress, once started
        self.errand: MissionTracker | None = None  # a hold, return or landing
        self.last_status: tuple | None = None
        fence_topic = self.param("geofence_topic", "/geofence", "its origin places a GeoJSON "
                                 "mission").value
        if self.geo is not None:  # an inline mission is in ENU already
            self.subscribe(fence_topic, GeofenceMsg, self._on_fence)
        self.guard: GeofenceStatus | None = None  # the guard's latest, taken at a step
        self.time_ns = 0  # the step's time: every decision and stamp is at a step's time
        self.plan_stamp_ns = 0  # the last Mission's stamp
        self.subscribe(f"/{self.vehicle}/odometry", Odometry, self._on_odometry)
        self.subscribe(f"/{self.vehicle}/geofence_status", GeofenceStatus, self._on_guard)
        self.subscribe(f"/{self.vehicle}/mission_command", MissionCommand, self._on_command)
        self.plan_failure = ""  # why the planner cannot plan the leg last sent, if it cannot
        self.subscribe("/events", Event, self._on_event)
        self.plan = self.publisher(f"/{self.vehicle}/mission", Mission, latched=True)
        self.status = self.publisher(f"/{self.vehicle}/mission_status", MissionStatus,
                                     latched=True)
        self.ticker = StepTicker.from_params(self, float(self.param("rate_hz", 10.0).value),
                                             self._tick, ("geofence_status",))
        self._publish_status()

    def _load(self, path: str, inline: list) -> tuple[GeoMission | None, Mission | None]:
        """The file read (placed once the fence comes), or the inline mission; a bad one
        fails setup, naming the file, feature and field."""
        if bool(path) == bool(inline):
            raise ValueError(f"{self.name}: give either 'mission' (a GeoJSON file) or "
                             f"'waypoints' (inline ENU), got {'both' if path else 'neither'}")
        try:
            if not path:
                return None, enu_mission(inline, f"{self.vehicle}-mission", self.vehicle)
            geo = read_mission(path)
        except MissionError as exc:
            raise ValueError(f"{self.name}: {exc}") from None
        if geo.vehicle_id not in ("", self.vehicle):
            raise ValueError(f"{self.name}: {geo.name} is for vehicle {geo.vehicle_id!r}, "
                             f"not {self.vehicle!r}")
        return geo, None

    # -- inputs -------------------------------------------------------------------------

    def _on_fence(self, msg: GeofenceMsg) -> None:
        origin = (msg.origin_lat_deg, msg.origin_lon_deg, msg.origin_alt_m)
        if self.mission is not None:
            if origin != self.origin:
                self._count("origin_changed", f"a geofence with another origin {origin}: the "
                            f"mission stays in the frame of {self.origin}")
            return
        try:
            mission = self.geo.to_mission(origin)
        except MissionError as exc:
            self._count("invalid_geofence", str(exc))
            self._event("invalid_geofence", "error", f"cannot place the mission: {exc}")
            return
        mission.vehicle_id, mission.return_home = self.vehicle, self.return_home
        self.origin, self.mission = origin, mission
        if self.ticker.pending_ns is not None:
            self.ticker.retry()
        else:
            self._step()
            self._publish_status()

    def _on_odometry(self, msg: Odometry) -> None:
        estimate = self.take_estimate(msg)
        if estimate is None:
            return
        if math.isnan(self.first_estimate_s):
            self.first_estimate_s = estimate.stamp_s
        if self.ticker.trigger == "clock":
            self._tick(self.now_ns())  # at once: no step to wait for
        else:
            self.ticker.estimate(msg.header.stamp_ns)

    def _on_guard(self, msg: GeofenceStatus) -> None:
        self.guard = msg
        if "geofence_status" in self.ticker.latest:
            self.ticker.arrived("geofence_status", msg.header.stamp_ns)
        else:  # no step waits for it: act on it now
            self._take_guard()
            self._publish_status()

    def _take_guard(self) -> None:
        """The guard's latest status, as of this step: has it taken or let go?"""
        msg = self.guard
        if msg is None or msg.failsafe == self.failsafe:
            return
        previous, self.failsafe = self.failsafe, msg.failsafe
        if msg.failsafe == "none":
            self._event("failsafe_cleared", "info", f"the geofence guard let go after its "
                        f"{previous}: resuming ({STATES[self.mode]})",
                        failsafes=str(self.failsafes))
            self._enter(self.mode)
        else:
            if previous == "none":
                self.failsafes += 1
            self.failsafe_zone = msg.zone_id
            self._event("failsafe", "warn", f"the geofence guard took the vehicle: "
                        f"{msg.failsafe} for zone {msg.zone_id!r}", action=msg.failsafe,
                        zone_id=msg.zone_id, failsafes=str(self.failsafes))

    def _on_event(self, msg: Event) -> None:
        """The planner's word that the mission's current leg cannot be planned (it holds
        the vehicle meanwhile): the mission fails at the next step."""
        if (msg.kind == "plan_failed" and msg.data.get("vehicle_id") == self.vehicle
                and self.mission is not None
                and msg.data.get("mission_id") == self.mission.mission_id
                and msg.data.get("mission_stamp_ns") == str(self.plan_stamp_ns)):
            self.plan_failure = msg.message.removeprefix(f"{self.vehicle}: ")

    def _on_command(self, msg: MissionCommand) -> None:
        if msg.vehicle_id not in ("", self.vehicle):
            self._count("wrong_vehicle", f"an order for {msg.vehicle_id!r} on "
                        f"/{self.vehicle}/mission_command ignored")
            return
        refusal = self._order(msg.action)
        waiting = " (carried out when the geofence guard lets go)" if (
            refusal is None and self.failsafe != "none") else ""
        self._event("command", "info" if refusal is None else "warn",
                    f"{msg.action} from {msg.source or 'unknown'}: "
                    + (f"refused: {refusal}" if refusal else f"accepted{waiting}"),
                    action=msg.action, source=msg.source,
                    outcome="refused" if refusal else "accepted")
        self._publish_status()

    def _tick(self, stamp_ns: int) -> None:
        if self.mission is None and self.ticker.trigger == "estimate":
            self.ticker.hold(stamp_ns)  # a GeoJSON mission waits for the fence to place it
            return
        self.time_ns = max(self.time_ns, stamp_ns)
        self._take_guard()
        self._step()
        self._publish_status(force=True)

    # -- the mission --------------------------------------------------------------------

    def _step(self) -> None:
        """Start when due, fail when late, else follow the progress."""
        now = self.time_ns * 1e-9
        if self.mode == "idle":
            if self.go and self.mission is not None and self.home is not None and (
                    now >= self.first_estimate_s + self.start_delay):
                self._begin()
        elif self._late(now):
            self._fail(f"not completed within {self.timeout:g} s")
        elif self.plan_failure and self.mode == "mission":
            self._fail(f"cannot be planned: {self.plan_failure}")
        elif self.failsafe == "none" and self.estimate is not None:
            self._follow(self.estimate)

    def _fail(self, why: str) -> None:
        self.plan_failure = ""
        self._switch("failed", why)
        self._event("failed", "error", f"mission {self.mission.mission_id!r} failed: {why}")

    def _late(self, now: float) -> bool:
        """Whether a running mission has overrun its timeout (a completed one never has)."""
        return (self.timeout > 0 and self.tracker is not None and not self.tracker.completed
                and self.mode != "failed" and now - self.started_s > self.timeout)

    def _begin(self) -> None:
        self.tracker = MissionTracker(self.mission, self.home, self.kind == "quadrotor")
        self.started_s = self.time_ns * 1e-9
        self._event("started", "info", f"mission {self.mission.mission_id!r} started: "
                    f"{len(self.mission.waypoints)} waypoints"
                    + (", then home" if self.mission.return_home else ""))
        self._switch("mission")

    def _follow(self, est: Estimate) -> None:
        speed = float(np.linalg.norm(est.velocity_body))
        if self.mode == "mission":
            step = self.tracker.update(est.position, speed, est.stamp_s)
            for k in step.arrived:
                what = "home" if k >= self.tracker.waypoints else f"waypoint {k}"
                self._event("waypoint_reached", "info", f"{what} reached", waypoint=str(k))
            if step.completed:
                self.mode, self.note = "completed", ""
                self._event("completed", "info", f"mission {self.mission.mission_id!r} "
                            f"completed in {self.time_ns * 1e-9 - self.started_s:.1f} s")
            elif step.new_leg:
                self._send_leg()
        elif self.mode in ("return", "land") and self.errand.update(
                est.position, speed, est.stamp_s).completed:
            arrived = "at home" if self.mode == "return" else "landed"
            self.mode, self.note = "hold", arrived
            self._event(arrived.replace(" ", "_"), "info", arrived)

    def _order(self, action: str) -> str | None:
        """Carry out an operator's order; the reason when it is refused."""
        resumable = self.tracker is not None and not self.tracker.completed and (
            self.mode in ("hold", "return", "land"))
        if action in ("start", "resume") and self.mode == "mission":
            return "the mission is already running"
        if action == "resume" and not resumable:
            return f"nothing to resume: the mission is {STATES[self.mode]}"
        if action == "start" and not resumable:
            self.go, self.mode = True, "idle"  # from the first waypoint, as soon as it can
            self._step()
            return None
        if action in ("start", "resume"):
            self._switch("mission")
        elif self.estimate is None:
            return "no estimate of the vehicle yet"
        elif action == "land" and self.kind != "quadrotor":
            self._switch("hold", f"a {self.kind} cannot land: holding")
        else:
            self._switch(action, f"{action} ordered")
        return None

    def _switch(self, mode: str, note: str = "") -> None:
        """Change what the vehicle does; it happens now unless the guard has it."""
        self.mode, self.note = mode, note
        if self.failsafe == "none":
            self._enter(mode)

    def _enter(self, mode: str) -> None:
        """Send the planner what `mode` needs, from where the vehicle is now."""
        if mode == "mission":
            self.tracker.restart(self.estimate.position)
            self._send_leg()
        elif mode in ERRANDS and self.estimate is not None:
            x, y, z = self.estimate.position
            target = {"return": self.home, "land": (x, y, 0.0)}.get(mode, (x, y, z))
            self._send_errand(mode, target)

    def _send_leg(self) -> None:
        self._send(self.mission.mission_id, self.tracker.leg())

    def _send_errand(self, mode: str, target: Sequence[float]) -> None:
        last = self.mission.waypoints[-1] if self.mission else Waypoint()
        x, y, z = (float(v) for v in target)
        waypoint = Waypoint(position=Vector3(x=x, y=y, z=z),
                            acceptance_radius_m=last.acceptance_radius_m)
        mission_id = f"{self.mission_id}/{mode}"
        self.errand = MissionTracker(Mission(mission_id=mission_id, waypoints=[waypoint]),
                                     three_d=self.kind == "quadrotor")
        self._send(mission_id, [waypoint])

    def _send(self, mission_id: str, waypoints: list[Waypoint]) -> None:
        self.plan_stamp_ns, self.plan_failure = self.time_ns, ""
        self.plan.publish(Mission(header=Header(stamp_ns=self.time_ns, frame_id="map"),
                                  mission_id=mission_id, vehicle_id=self.vehicle,
                                  waypoints=waypoints, return_home=False))

    # -- reports ------------------------------------------------------------------------

    def _publish_status(self, force: bool = False) -> None:
        """MissionStatus when anything but the distance changed, or when forced (each
        step)."""
        state = "failsafe" if self.failsafe != "none" else (
            "returning" if self.mode == "mission" and self.tracker.returning
            else STATES[self.mode])
        message = (f"geofence guard: {self.failsafe} for zone {self.failsafe_zone!r} "
                   f"(failsafe {self.failsafes})" if state == "failsafe" else self.note)
        waypoints = len(self.mission.waypoints) if self.mission else 0
        waypoint = min(self.tracker.index, waypoints) if self.tracker else 0
        key = (state, self.mission_id, waypoint, waypoints, message)
        if key == self.last_status and not force:
            return
        self.last_status = key
        self.status.publish(MissionStatus(
            header=Header(stamp_ns=self.time_ns, frame_id="map"), vehicle_id=self.vehicle,
            mission_id=self.mission_id, state=state, waypoint=waypoint, waypoints=waypoints,
            distance_to_waypoint_m=self._distance(), message=message,
            plan_stamp_ns=self.plan_stamp_ns))

    def _distance(self) -> float:
        follow = self.tracker if self.mode in ("mission", "completed") else self.errand
        if self.estimate is None or follow is None:
            return math.inf  # as the message says: no estimate, no distance
        return follow.distance(self.estimate.position)

    def _event(self, what: str, severity: str, message: str, **data: str) -> None:
        self.vehicle_event("mission", severity, message,
                           {"event": what, "mission_id": self.mission_id, **data})

    @property
    def mission_id(self) -> str:
        """The mission's id, known from the file before the fence places it."""
        return self.mission.mission_id if self.mission else self.geo.mission_id
