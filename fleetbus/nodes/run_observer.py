"""The run observer: records, per vehicle, what a mission run is judged by -- ground
truth, the estimate's error, the planned paths, the fence, the guard's margin, the MPC's
solve times, mission progress, events and the declared latency budgets' figures -- and
hands them over as `fleetbus.missions.report.VehicleRun`s.

Parameters: `vehicles` ([{id, type}], as a graph's `${vehicles}`). Topics in, per vehicle:
`/<id>/state`, `/<id>/odometry`, `/<id>/path`, `/<id>/control`, `/<id>/mission_status`,
`/<id>/geofence_status`, `/geofence/<type>`; and `/events`, `/diagnostics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fleetbus.bus.node import Node
from fleetbus.messages import (
    Diagnostic,
    Event,
    GeofenceStatus,
    MissionStatus,
    Odometry,
    Path,
    VehicleState,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.missions.report import VehicleRun
from fleetbus.nodes.conversions import fence_from_msg
from fleetbus.planners import Geofence, GeofenceError

DEPTH = 100_000  # nothing a run is judged by may be dropped


@dataclass
class _Record:
    vehicle_type: str
    truth: list[tuple[float, float, float, float]] = field(default_factory=list)
    truth_xy: dict[int, tuple[float, float]] = field(default_factory=dict)
    estimate_error_m: list[float] = field(default_factory=list)
    paths: list[np.ndarray] = field(default_factory=list)
    fence: Geofence | None = None
    margins: list[float] = field(default_factory=list)
    solve_ms: list[float] = field(default_factory=list)
    status: MissionStatus | None = None
    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    latency: dict[str, str] = field(default_factory=dict)


class RunObserver(Node):
    def setup(self) -> None:
        vehicles = self.param("vehicles", [], "[{id, type}] of the run").value
        self.records = {v["id"]: _Record(v["type"]) for v in vehicles}
        for vid, rec in self.records.items():
            self._follow(vid, rec)
        self.subscribe("/events", Event, self._on_event, depth=DEPTH)
        self.subscribe("/diagnostics", Diagnostic, self._on_diagnostic, depth=DEPTH)

    def _follow(self, vid: str, rec: _Record) -> None:
        def state(msg: VehicleState) -> None:
            p = msg.pose.position
            rec.truth.append((msg.header.stamp_ns / 1e9, p.x, p.y, p.z))
            rec.truth_xy[msg.header.stamp_ns] = (p.x, p.y)

        def odometry(msg: Odometry) -> None:
            # the simulator and the estimator stamp on the same sim clock: an estimate
            # is compared with the truth of its own instant, never an interpolation
            truth = rec.truth_xy.get(msg.header.stamp_ns)
            if truth is not None:
                p = msg.pose.position
                rec.estimate_error_m.append(math.hypot(p.x - truth[0], p.y - truth[1]))

        def path(msg: Path) -> None:
            rec.paths.append(np.array([[q.position.x, q.position.y, q.position.z]
                                       for q in msg.poses], float).reshape(-1, 3))

        def control(msg: Diagnostic) -> None:
            if msg.values.get("command") == "sent" and "solve_ms" in msg.values:
                rec.solve_ms.append(float(msg.values["solve_ms"]))

        def fence(msg: GeofenceMsg) -> None:
            try:
                rec.fence = fence_from_msg(msg)
            except GeofenceError as exc:
                self._count("invalid_geofence", f"{vid}: {exc}")

        def guard(msg: GeofenceStatus) -> None:
            if math.isfinite(msg.margin_m):
                rec.margins.append(msg.margin_m)

        self.subscribe(f"/{vid}/state", VehicleState, state, depth=DEPTH)
        self.subscribe(f"/{vid}/odometry", Odometry, odometry, depth=DEPTH)
        self.subscribe(f"/{vid}/path", Path, path, depth=100)
        self.subscribe(f"/{vid}/control", Diagnostic, control, depth=DEPTH)
        self.subscribe(f"/{vid}/mission_status", MissionStatus,
                       lambda msg: setattr(rec, "status", msg), conflate=True)
        self.subscribe(f"/{vid}/geofence_status", GeofenceStatus, guard, depth=DEPTH)
        self.subscribe(f"/geofence/{rec.vehicle_type}", GeofenceMsg, fence)

    def _on_event(self, msg: Event) -> None:
        rec = self.records.get(msg.data.get("vehicle_id", ""))
        if rec is not None:
            rec.events.append((msg.header.stamp_ns / 1e9, msg.kind, msg.severity, msg.message))

    def _on_diagnostic(self, msg: Diagnostic) -> None:
        # a declared budget per vehicle reports as latency/<budget>/<vehicle id>
        if msg.name.startswith("latency/"):
            rec = self.records.get(msg.name.rsplit("/", 1)[-1])
            if rec is not None:
                rec.latency = dict(msg.values)

    # -- read by the runner, from its own thread once the run is over -----------------

    def progress(self) -> dict[str, MissionStatus | None]:
        return {vid: rec.status for vid, rec in self.records.items()}

    def sim_time_s(self) -> float:
        return max((rec.truth[-1][0] for rec in self.records.values() if rec.truth),
                   default=0.0)

    def runs(self) -> list[VehicleRun]:
        return [self._run(vid, rec) for vid, rec in self.records.items()]

    @staticmethod
    def _run(vid: str, rec: _Record) -> VehicleRun:
        status = rec.status
        latency = rec.latency
        return VehicleRun(
            vehicle_id=vid, vehicle_type=rec.vehicle_type,
            truth=np.array(rec.truth, float).reshape(-1, 4),
            estimate_error_m=list(rec.estimate_error_m), planned_paths=list(rec.paths),
            fence=rec.fence,
            # the guard's margin shrinks to radius + k sigma at rest: the least it asks
            margin_m=min(rec.margins, default=math.nan),
            solve_ms=list(rec.solve_ms),
            waypoints_total=status.waypoints if status else 0,
            waypoints_reached=min(status.waypoint, status.waypoints) if status else 0,
            mission_state=status.state if status else "idle",
            events=list(rec.events),
            latency_p50_ms=_number(latency.get("run_p50_ms")),
            latency_p99_ms=_number(latency.get("run_p99_ms")),
            latency_budget_p99_ms=_number(latency.get("budget_p99_ms")))


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
