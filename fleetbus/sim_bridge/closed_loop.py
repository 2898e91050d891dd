"""A controller against the simulator's physics, without the bus: for tuning, tests and
benchmarks. The vehicle is stepped by the same World (RK4 at the physics rate, commands
clipped to the model's limits) the simulator node runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fleetbus.control.mpc import MpcResult
from fleetbus.control.tracking import PathController
from fleetbus.sim_bridge.vehicles import SimVehicle
from fleetbus.sim_bridge.world import World


@dataclass
class Trace:
    period_s: float
    results: list[MpcResult] = field(default_factory=list)  # one per control step
    states: list[np.ndarray] = field(default_factory=list)  # every physics step's

    @property
    def solve_ms(self) -> np.ndarray:
        return np.array([r.solve_s for r in self.results]) * 1e3

    @property
    def positions(self) -> np.ndarray:
        return np.array(self.states)[:, :3]


def run(controller: PathController, vehicle: SimVehicle, duration_s: float,
        period_s: float = 0.1, physics_dt_s: float = 0.01) -> Trace:
    """Control `vehicle` for `duration_s` with a command every `period_s`."""
    world = World([vehicle], physics_dt_s, command_timeout_s=2 * period_s)
    trace = Trace(period_s)
    substeps = round(period_s / physics_dt_s)
    for _ in range(round(duration_s / period_s)):
        result = controller.step(world.time_s, vehicle.state, vehicle.applied,
                                 vehicle.safe_command)
        world.command(vehicle.id, result.command)
        trace.results.append(result)
        for _ in range(substeps):
            world.step()
            trace.states.append(vehicle.state.copy())
    return trace
