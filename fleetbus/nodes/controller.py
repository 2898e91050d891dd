"""The controller node: follows one vehicle's planned path with model-predictive control.

Every control period it takes the latest estimate, the path and corridor from the
planner and the altitude band of the corridor (drones), solves the MPC
(fleetbus.control) and publishes the command, with a diagnostic of the solve. It never
acts on a stale or invalid input:

- no estimate, or one older than `stale_after_s`, or one that is not finite: no command
  at all, so the vehicle's own command timeout takes over (hover, brake, no thrust);
- no path yet, or a path whose corridor has not arrived: the safe command (hold);
- the geofence guard has taken over (its status reports a failsafe): no command, the
  guard's outrank it anyway; the controller starts afresh once it is cleared;
- a solve that fails or runs over its budget: the previous plan, shifted, while it still
  covers the moment, else the safe command (counted and reported);
- a solve not answered after `hang_after_s` (wall-clock seconds): the solver's process is
  killed and another started, and a warm-started solve is tried again from a cold start
  and then z0 held still (an event names the file the solve's inputs were saved to). If
  no guess is answered, the same as a failed solve; after three such steps, the other
  back-end is built and used.

The solver is built (and compiled to C, once per problem, cached on disk) in the
background: setup stays quick, and the node holds until the controller is ready.

Parameters: `vehicle_id`, `vehicle_type`, `model` (the vehicle's model parameters, as the
simulator takes them), `rate_hz`, `budget_margin_s` (the solve budget is the control
period minus this), `stale_after_s`, `solver` (fatrop | ipopt), `horizon`, `jit`,
`hang_after_s` (5 s on sim time, ten periods on wall-clock time),
`trigger` (clock: tick on the node's clock; estimate: tick on the first estimate of each
period, at its stamp -- what a lockstep run wants, see fleetbus.nodes.ticking), `await`
(inputs a tick waits for at its own stamp: geofence_status, mission_status; with
mission_status, a tick after the mission manager sent a new plan waits, `ready: false`,
for the planner's path of that plan). On sim time a solve has no deadline: the world
waits for it, and a lockstep run then does not depend on the machine's load.
Topics: `/<id>/path` (Path, latched), `/<id>/corridor` (Corridor, latched),
`/<id>/odometry`, `/<id>/geofence_status` and `/<id>/mission_status` in (an empty path:
hold where it is);
`/<id>/cmd` (latched),
`/<id>/control` (Diagnostic, every period: the solve, or `command: none` and why),
`/diagnostics` (1 Hz) and `/events` out.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np

from fleetbus.control import safe_command
from fleetbus.control.compiled import cache_dir
from fleetbus.control.mpc import MpcResult, default_settings
from fleetbus.control.reference import PathReference
from fleetbus.control.tracking import PathController, model_state
from fleetbus.estimation import Estimate
from fleetbus.messages import (
    Corridor,
    Diagnostic,
    GeofenceStatus,
    Header,
    MissionStatus,
    Odometry,
    Path,
)
from fleetbus.nodes.conversions import COMMANDS, command_message
from fleetbus.nodes.ticking import StepTicker
from fleetbus.nodes.vehicle_node import VehicleNode
from fleetbus.sim_bridge.vehicles import make_model

PATH_DONE_M = 0.5  # the path is complete when this little of it is left
SIM_TIME_BUDGET_S = 60.0  # on sim time no solve is late; a hung one is still caught
HANGS_BEFORE_SWITCH = 3  # steps no guess answered, of one back-end, before the other


class ControllerNode(VehicleNode):
    def setup(self) -> None:
        self.vehicle_params("control", COMMANDS)
        self.model = make_model(self.kind, self.param("model", {}).value or None)
        rate = float(self.param("rate_hz", 10.0, "control rate, Hz").value)
        margin = float(self.param("budget_margin_s", 0.02, "period minus this is the "
                                  "solve budget, s").value)
        self.stale_after = float(self.param("stale_after_s", 0.3, "an estimate older "
                                            "than this is not acted on, s").value)
        overrides = {"solver": self.param("solver", "fatrop", "fatrop | ipopt").value,
                     "horizon": int(self.param("horizon", 20, "MPC steps").value),
                     "jit": bool(self.param("jit", True, "compile the solver to C").value),
                     "budget_s": SIM_TIME_BUDGET_S if self.clock.is_sim else max(
                         1.0 / rate - margin, 1e-3),
                     # on wall-clock time ten periods: the node answers nothing meanwhile
                     "hang_after_s": float(self.param(
                         "hang_after_s", 5.0 if self.clock.is_sim else 10.0 / rate,
                         "a solve not answered after this long is ended, s").value)}
        if overrides["solver"] not in ("fatrop", "ipopt"):
            raise ValueError(f"controller: solver must be fatrop or ipopt, got "
                             f"{overrides['solver']!r}")
        self.settings = default_settings(self.kind, **overrides)
        self.controller: PathController | None = None
        self.hangs_reported = self.unanswered = 0  # of the controller in use
        threading.Thread(target=self._build, name=f"{self.name}-build", daemon=True).start()
        self.estimate: Estimate | None = None
        self.path: Path | None = None
        self.corridor: Corridor | None = None
        self.failsafe = "none"
        self.u_last: np.ndarray | None = None
        self.warned: set[str] = set()
        self.subscribe(f"/{self.vehicle}/path", Path, self._on_path)
        self.subscribe(f"/{self.vehicle}/corridor", Corridor, self._on_corridor)
        self.subscribe(f"/{self.vehicle}/odometry", Odometry, self._on_odometry, conflate=True)
        self.subscribe(f"/{self.vehicle}/geofence_status", GeofenceStatus, self._on_status,
                       conflate=True)
        self.command = self.publisher(f"/{self.vehicle}/cmd", COMMANDS[self.kind],
                                      latched=True)
        self.control = self.publisher(f"/{self.vehicle}/control", Diagnostic)
        self.diagnostics = self.publisher("/diagnostics", Diagnostic, depth=100)
        self.plan_stamp_ns = 0  # the mission manager's last plan: its path is awaited
        self.held_ns: int | None = None  # a tick held for that path
        self.ticker = StepTicker.from_params(self, rate, lambda ns: self._tick(ns * 1e-9),
                                             ("geofence_status", "mission_status"))
        if "mission_status" in self.ticker.latest:
            self.subscribe(f"/{self.vehicle}/mission_status", MissionStatus,
                           self._on_mission_status)
        self.timer(1.0, self._diagnose)

    @property
    def warming_up(self) -> bool:
        return self.controller is None

    def _build(self) -> None:
        controller = PathController(self.kind, self.model, self.settings)
        self.call_soon_threadsafe(lambda: self._ready(controller))

    def _ready(self, controller: PathController) -> None:
        self.controller = controller
        self.hangs_reported = self.unanswered = 0
        self._load_route()  # a route that came while the solver was being built
        self._tick()  # answer now: a lockstep world has been holding its step for us

    # -- inputs -------------------------------------------------------------------------

    def _on_odometry(self, msg: Odometry) -> None:
        self.estimate = self.read_estimate(msg)
        if self.estimate is not None:
            stamp_ns = msg.header.stamp_ns
            self.ticker.estimate(stamp_ns)
            if self.ticker.pending_ns == stamp_ns:
                # its inputs are late (a node still starting): a lockstep world waits for
                # them rather than step on without the guard's or the mission's word
                self.tick_s = stamp_ns * 1e-9
                self._decline(f"waiting for {', '.join(self.ticker.waiting_for())}",
                              ready=False)

    def _on_mission_status(self, msg: MissionStatus) -> None:
        self.plan_stamp_ns = max(self.plan_stamp_ns, msg.plan_stamp_ns)
        self.ticker.arrived("mission_status", msg.header.stamp_ns)

    def _on_path(self, msg: Path) -> None:
        self.path = msg
        self._load_route()

    def _on_corridor(self, msg: Corridor) -> None:
        self.corridor = msg
        self._load_route()

    def _on_status(self, msg: GeofenceStatus) -> None:
        if msg.failsafe != "none" and self.failsafe == "none":
            self._once("guard", "control_yielded", "warn", f"the geofence guard's "
                       f"{msg.failsafe} failsafe has the vehicle: not commanding")
        elif msg.failsafe == "none" and self.failsafe != "none":
            self.warned.discard("guard")
            self._load_route()  # start afresh from where the failsafe left the vehicle
        self.failsafe = msg.failsafe
        self.ticker.arrived("geofence_status", msg.header.stamp_ns)

    def _load_route(self) -> None:
        """Follow the path once its corridor (same stamp) is here too."""
        path, corridor, controller = self.path, self.corridor, self.controller
        if (path is None or corridor is None or controller is None
                or path.header.stamp_ns != corridor.header.stamp_ns):
            return
        if not path.poses:  # the planner's "stay where you are"
            controller.follow(None)
            self.vehicle_event("path_following", "info", "holding: the path is empty")
            self._release()
            return
        dims = 3 if self.kind == "quadrotor" else 2
        points = [[p.position.x, p.position.y, p.position.z][:dims] for p in path.poses]
        rows = self.settings.corridor_rows
        try:
            too_big = [i for i, c in enumerate(corridor.cells) if len(c.b) > rows]
            if too_big:
                raise ValueError(f"corridor cells {too_big} have more than {rows} sides")
            cells = [(np.column_stack([c.a_x, c.a_y]), np.asarray(c.b)) for c in corridor.cells]
            reference = PathReference(points, path.speeds_mps, cells)
        except ValueError as exc:
            self._count("invalid_path", f"/{self.vehicle}/path rejected: {exc}")
            self.vehicle_event("invalid_path", "error", f"path rejected: {exc}")
            controller.follow(None)
            self._release()
            return
        controller.follow(reference, (corridor.floor_m, corridor.ceiling_m))
        self.warned.discard("done")
        self.vehicle_event("path_following", "info", f"following a {reference.length_m:.1f} m "
                           f"path in {len(cells)} corridor cells")
        self._release()

    # -- the loop -----------------------------------------------------------------------

    def _tick(self, now_s: float | None = None) -> None:
        now = self.now() if now_s is None else now_s
        self.tick_s = now
        controller, est = self.controller, self.estimate
        if controller is None:  # a lockstep world waits; a real vehicle's timeout holds it
            self._decline("building the solver", ready=False)
            return
        if est is None:  # the estimator is not ready yet: nothing to say but that
            self._decline("no estimate yet")
            return
        if now - est.stamp_s > self.stale_after:
            self._once("stale", "estimate_stale", "error", "no fresh estimate: not "
                       "commanding")
            self._decline("no fresh estimate")
            return
        self.warned.discard("stale")
        if self.failsafe != "none":
            self._decline(f"the geofence guard's {self.failsafe} is in charge")
            return
        if self.plan_stamp_ns > 0 and self._path_stamp() < self.plan_stamp_ns:
            # the mission manager has sent the planner a new plan: the old path no longer
            # holds, and a lockstep world waits (ready: false) until the new one is here
            self.held_ns = round(now * 1e9)
            self._decline("waiting for the planner's path", ready=False)
            return
        x = model_state(self.kind, est)
        u_last = self.u_last if self.u_last is not None else np.asarray(
            controller.mpc.vehicle.u_ref)
        result = controller.step(now, x, u_last,
                                 lambda: safe_command(self.kind, self.model, est, "hold"))
        self.u_last = result.command
        self.command.publish(command_message(self.kind, result.command, round(now * 1e9)))
        self._report(result)
        if controller.mpc.counters["hung"] > self.hangs_reported:
            self._solver_hung(controller, result)

    def _path_stamp(self) -> int:
        """The stamp of the route being followed (-1 before the first)."""
        path, corridor = self.path, self.corridor
        if path is None or corridor is None or path.header.stamp_ns != corridor.header.stamp_ns:
            return -1
        return path.header.stamp_ns

    def _release(self) -> None:
        """A new route is loaded: run the tick held for it, if any."""
        held, self.held_ns = self.held_ns, None
        if held is not None and self._path_stamp() >= self.plan_stamp_ns:
            self._tick(held * 1e-9)
        elif held is not None:
            self.held_ns = held

    def _solver_hung(self, controller: PathController, result: MpcResult) -> None:
        """A solve did not return in time: its process was killed and another started, and
        the MPC tried other guesses. Said as an event, with the hung solve's inputs saved
        to reproduce it: a warning when another guess was answered, else critical. After
        HANGS_BEFORE_SWITCH steps that no guess answered, the other back-end is built and
        used (until it is ready, ticks decline as while starting)."""
        mpc = controller.mpc
        self.hangs_reported = mpc.counters["hung"]
        answered = not result.status.startswith("hung ")
        self.unanswered += not answered
        message = (f"the {self.settings.solver} solve did not return in "
                   f"{self.settings.hang_after_s:.1f} s: its process was restarted; " +
                   (f"another guess: {'solved' if not result.fallback else result.status}"
                    if answered else "no guess answered"))
        data = {}
        try:
            data["inputs"] = str(mpc.save_last_hung(cache_dir() / "hung-solves",
                                                    self.vehicle))
        except OSError as exc:
            self.log.warning("%s: the hung solve's inputs not saved: %s", self.name, exc)
        if self.unanswered >= HANGS_BEFORE_SWITCH:
            failed = self.settings.solver
            self.settings = replace(self.settings, solver="ipopt" if failed == "fatrop"
                                    else "fatrop")
            message += f"; {self.unanswered} such steps: switching to {self.settings.solver}"
            self.controller = None
            mpc.close()
            threading.Thread(target=self._build, name=f"{self.name}-rebuild",
                             daemon=True).start()
        self.vehicle_event("control_solver_hung", "warn" if answered else "critical",
                           message, data)

    def _decline(self, reason: str, ready: bool = True) -> None:
        """A tick without a command, said on /<id>/control: a lockstep simulator takes it
        as this tick's answer, or waits while the controller is not `ready` (and a
        monitor sees why the vehicle is on its own)."""
        self.control.publish(Diagnostic(
            header=Header(stamp_ns=round(self.tick_s * 1e9)), name=f"control/{self.vehicle}",
            level="warn", message=reason,
            values={"command": "none", "ready": str(ready).lower()}))

    def _report(self, result: MpcResult) -> None:
        horizon = self.controller.horizon if self.controller.path is not None else None
        if result.fallback and horizon is not None:  # without a path, holding is the job
            self._once("fallback", "control_fallback", "warn", f"solver: {result.status}; "
                       f"using the {result.fallback} command")
        elif not result.fallback:
            self.warned.discard("fallback")
        if horizon is not None and horizon.remaining_m < PATH_DONE_M:
            self._once("done", "path_complete", "info", "reached the end of the path")
        level = "ok" if not result.fallback else "warn"
        self.control.publish(Diagnostic(
            header=Header(stamp_ns=round(self.tick_s * 1e9)), name=f"control/{self.vehicle}",
            level=level, message=result.status, values={
                "solve_ms": f"{result.solve_s * 1e3:.3f}",
                "iterations": str(result.iterations),
                "status": result.status,
                "max_slack_m": _num(result.max_slack_m),
                "fallback": result.fallback or "none",
                "command": "sent",
                "remaining_m": _num(horizon.remaining_m if horizon else math.nan)}))

    def _diagnose(self) -> None:
        controller = self.controller
        stamp = Header(stamp_ns=self.now_ns())
        name = f"control/{self.vehicle}"
        if controller is None:
            self.diagnostics.publish(Diagnostic(header=stamp, name=name, level="warn",
                                                message="building the solver"))
            return
        counters = controller.mpc.counters
        level = "ok" if counters["failed"] == 0 else "warn"
        self.diagnostics.publish(Diagnostic(
            header=stamp, name=name, level=level,
            message="following" if controller.path is not None else "no path",
            values={k: str(v) for k, v in counters.items()}
            | {"compiled": str(controller.mpc.compiled).lower(),
               "solver": self.settings.solver}))

    def _once(self, key: str, kind: str, severity: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.vehicle_event(kind, severity, message)


def _num(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "nan"
