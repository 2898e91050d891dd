"""A simulation without a bus: one vehicle, its sensors and a control law in a plain
loop — for estimator tests and benchmarks that need many seeded runs quickly. The same
models, sensors and noise as the simulator node."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fleetbus.sim_bridge.sensing import Reading, SensorSettings, SensorSuite
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model
from fleetbus.sim_bridge.world import World


@dataclass
class Step:
    time_s: float
    vehicle: SimVehicle  # its state is the truth at time_s
    readings: list[tuple[float, Reading]]  # (when it is delivered, reading)


def run(kind: str, seconds: float, seed: int, control: Callable[[float, SimVehicle], Any],
        start: dict[str, float] | None = None, params: dict[str, Any] | None = None,
        settings: SensorSettings | None = None, physics_rate_hz: float = 100.0,
        ) -> Iterator[Step]:
    """Step a vehicle of `kind` for `seconds`, commanding `control(t, vehicle)` every
    physics step; yield the truth and the readings of each step."""
    model = make_model(kind, params)
    vehicle = SimVehicle(kind, kind, model, initial_state(kind, model, start or {}))
    world = World([vehicle], 1.0 / physics_rate_hz, command_timeout_s=np.inf)
    suite = SensorSuite(vehicle, world.dt, settings)
    rng = np.random.default_rng(seed)
    while world.time_s < seconds - 1e-9:
        world.command(kind, control(world.time_s, vehicle))
        world.step()
        t = world.time_s
        readings = [(t + sensor.latency_s, reading)
                    for sensor, reading in suite.sample(world.steps, t, rng)]
        yield Step(t, vehicle, readings)
