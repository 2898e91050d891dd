"""Fixed-step physics for any mix of vehicles. Pure library: the simulator node puts it
on the bus."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from fleetbus.models import rk4
from fleetbus.sim_bridge.vehicles import SimVehicle


class CommandRejected(ValueError):
    """A command that cannot be applied (unknown vehicle, wrong size, NaN)."""


class World:
    """Vehicles advanced together by RK4 at `physics_dt_s`. A command older than
    `command_timeout_s` is replaced by the vehicle's safe command (and counted): a
    controller that stopped answering must not leave a vehicle on its last order."""

    def __init__(self, vehicles: Iterable[SimVehicle], physics_dt_s: float = 0.01,
                 command_timeout_s: float = 0.5) -> None:
        if not physics_dt_s > 0:
            raise ValueError(f"physics_dt_s must be positive, got {physics_dt_s}")
        self.vehicles = {v.id: v for v in vehicles}
        self.dt = physics_dt_s
        self.command_timeout_s = command_timeout_s
        self.steps = 0

    @property
    def time_s(self) -> float:
        return self.steps * self.dt  # from the step count: no drift from summing dt

    def command(self, vehicle_id: str, u: Iterable[float], override: bool = False) -> None:
        """Apply a command from now on, clipped to the vehicle's limits; raises
        CommandRejected (counted on the vehicle) instead of applying a bad one. An
        `override` (a failsafe's command) outranks the ordinary ones: those are ignored,
        and counted, until the failsafe has been silent for the command timeout."""
        vehicle = self.vehicles.get(vehicle_id)
        if vehicle is None:
            raise CommandRejected(f"command for unknown vehicle {vehicle_id!r}")
        value = np.asarray(list(u), dtype=float)
        if value.shape != vehicle.lower.shape or not np.all(np.isfinite(value)):
            vehicle.rejected_commands += 1
            raise CommandRejected(f"{vehicle_id}: command {value.tolist()} is not "
                                  f"{len(vehicle.lower)} finite numbers")
        if override:
            vehicle.override_time_s = self.time_s
        elif (math.isfinite(vehicle.override_time_s)  # never overridden: -inf, and inf <= inf
              and self.time_s - vehicle.override_time_s <= self.command_timeout_s):
            vehicle.overridden_commands += 1
            return
        vehicle.command = np.clip(value, vehicle.lower, vehicle.upper)
        vehicle.command_time_s = self.time_s

    def step(self) -> None:
        for vehicle in self.vehicles.values():
            fresh = (vehicle.command is not None
                     and self.time_s - vehicle.command_time_s <= self.command_timeout_s)
            if fresh:
                u = vehicle.command
            else:
                u = vehicle.safe_command()
                vehicle.stale_steps += 1
            # Lists of floats: the models' fast path, bit-identical to the array one.
            x = np.array(rk4(vehicle.model.f, vehicle.state.tolist(), u.tolist(), self.dt))
            if vehicle.kind == "quadrotor":  # keep the attitude a unit quaternion
                x[6:10] /= math.sqrt(x[6:10] @ x[6:10])
            vehicle.rate = (x - vehicle.state) / self.dt  # the mean: what an IMU integrates
            vehicle.state, vehicle.applied = x, u
        self.steps += 1
