"""Path following for one vehicle: the MPC, the path it follows and what it does when it
has nothing to follow. The controller node puts this on the bus; tests and benchmarks run
it against the simulator's physics directly (fleetbus.sim_bridge.closed_loop)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fleetbus.control.mpc import (
    MpcResult,
    MpcSettings,
    PathTrackingMpc,
    VehicleModel,
    default_settings,
    vehicle_model,
)
from fleetbus.control.reference import Horizon, PathReference
from fleetbus.estimation.drone import rotation
from fleetbus.estimation.estimate import Estimate


def model_state(kind: str, estimate: Estimate) -> np.ndarray:
    """An estimate as the state vector of the vehicle's model (fleetbus.models). A ship's
    velocity is taken over ground: the current is not estimated."""
    q = np.asarray(estimate.orientation, float)
    if kind == "quadrotor":
        velocity_world = rotation(q) @ np.asarray(estimate.velocity_body, float)
        return np.concatenate([estimate.position, velocity_world, q])
    yaw = math.atan2(2 * (q[0] * q[3] + q[1] * q[2]), 1 - 2 * (q[2] ** 2 + q[3] ** 2))
    x, y = estimate.position[:2]
    if kind == "car":
        return np.array([x, y, yaw, estimate.velocity_body[0]])
    if kind == "vessel":
        return np.array([x, y, yaw, estimate.velocity_body[0], estimate.velocity_body[1],
                         estimate.angular_body[2]])
    raise ValueError(f"no model state for vehicle type {kind!r}")


class TrackingSolver(Protocol):
    """What PathController needs of an MPC: PathTrackingMpc, or another formulation of
    the same problem (the benchmarks' plain CasADi and do-mpc ones)."""

    vehicle: VehicleModel
    settings: MpcSettings
    counters: dict[str, int]

    def solve(self, x: np.ndarray, u_last: np.ndarray, ref: np.ndarray,
              corridor: list[tuple[np.ndarray, np.ndarray]], now_s: float,
              safe: Callable[[], np.ndarray], altitude: tuple[float, float]) -> MpcResult: ...

    def hold(self, status: str, safe: Callable[[], np.ndarray]) -> MpcResult: ...


class PathController:
    """Follows the path it was last given; holds (the safe command) without one."""

    def __init__(self, kind: str, model: Any, settings: MpcSettings | None = None,
                 mpc: TrackingSolver | None = None) -> None:
        self.kind = kind
        self.settings = mpc.settings if mpc is not None else settings or default_settings(kind)
        self.mpc: TrackingSolver = mpc or PathTrackingMpc(vehicle_model(kind, model),
                                                          self.settings)
        self.path: PathReference | None = None
        self.altitude = (-math.inf, math.inf)
        self.horizon: Horizon | None = None  # the last step's reference and cells
        self._plan: tuple[float, np.ndarray] | None = None  # (when, predicted positions)

    def follow(self, path: PathReference | None,
               altitude: tuple[float, float] = (-math.inf, math.inf)) -> None:
        """A new path (None: stop following). The previous prediction belongs to the old
        one, so cell hand-overs start afresh."""
        self.path, self.altitude, self._plan = path, altitude, None

    def step(self, now_s: float, x: np.ndarray, u_last: np.ndarray,
             safe: Callable[[], np.ndarray]) -> MpcResult:
        """The command for state `x` at `now_s`, `u_last` being applied; `safe()` is the
        vehicle's safe command, used without a path or a usable solution."""
        if self.path is None or not np.all(np.isfinite(x)):
            why = "no path" if self.path is None else "state not finite"
            return self.mpc.hold(why, safe)
        v = self.mpc.vehicle
        self.horizon = self.path.horizon(x[list(v.position)], self.settings.horizon,
                                         self.settings.dt, self._previous(now_s))
        result = self.mpc.solve(x, u_last, self.horizon.ref, self.horizon.corridor, now_s,
                                safe, self.altitude)
        if not result.fallback:
            self._plan = (now_s, result.predicted[:, :2])
        return result

    def _previous(self, now_s: float) -> np.ndarray | None:
        """The last plan's positions at this horizon's stage times (the last one held)."""
        if self._plan is None:
            return None
        when, positions = self._plan
        s = self.settings
        stages = np.arange(len(positions)) * s.dt
        times = now_s - when + stages
        return np.column_stack([np.interp(times, stages, positions[:, i]) for i in range(2)])
