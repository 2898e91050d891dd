"""One vehicle's physics as an autopilot sees it: actuator values in, kinematics in the
autopilot's frames (NED world, FRD body) out. The PX4 and ArduPilot adapters share it.

A multirotor is the rotor-level quadrotor (four motor thrusts, PX4/ArduPilot quad-X order);
cars and vessels are the simulator's models. All are stepped by the same RK4 as the
simulator's World. A multirotor rests on the ground (z = 0 ENU) until its thrust exceeds its
weight: an autopilot boots, calibrates and arms on the ground, and must read the 1 g of
specific force a resting vehicle feels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from fleetbus.models import RotorQuadrotor, rk4
from fleetbus.models.quadrotor import GRAVITY
from fleetbus.sim_bridge.frames import Quat, Vec3, attitude_enu_ned, enu_ned, flu_frd
from fleetbus.sim_bridge.sensors import body_motion, true_yaw
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model

HilKind = Literal["multirotor", "car", "vessel"]
HIL_KINDS: tuple[str, ...] = ("multirotor", "car", "vessel")


@dataclass(frozen=True)
class Kinematics:
    """What an autopilot's sensors derive from: NED/FRD, SI units."""

    position_ned: Vec3  # m from the origin
    velocity_ned: Vec3  # m/s
    attitude_ned: Quat  # FRD -> NED, (w, x, y, z)
    gyro_frd: Vec3  # body rates, rad/s
    specific_force_frd: Vec3  # what an accelerometer reads: (0, 0, -g) at rest, level


class HilBody:
    """A vehicle stepped by `step(inputs, dt)`; `inputs` are the model's (motor thrusts in N,
    or the car's and vessel's commands), clipped to its limits."""

    def __init__(self, kind: HilKind, params: dict[str, Any] | None = None,
                 start: dict[str, float] | None = None) -> None:
        if kind not in HIL_KINDS:
            raise ValueError(f"unknown HIL vehicle {kind!r} (known: {', '.join(HIL_KINDS)})")
        self.kind: HilKind = kind
        if kind == "multirotor":
            try:
                model = RotorQuadrotor(**(params or {}))
            except TypeError as exc:
                raise ValueError(f"multirotor: {exc}") from None
            sim_kind = "quadrotor"  # the same state layout, so the same sensor geometry
        else:
            model = make_model(kind, params)
            sim_kind = kind
        self.start = dict(start or {})
        self.vehicle = SimVehicle("hil", sim_kind, model,
                                  initial_state(sim_kind, model, self.start))
        self.reset()

    @property
    def model(self) -> Any:
        return self.vehicle.model

    def reset(self) -> None:
        """Back to rest at the start pose: an autopilot restarted."""
        v = self.vehicle
        v.state = initial_state(v.kind, v.model, self.start)
        v.rate = v.state * 0.0
        v.applied = v.lower * 0.0
        self.steps = 0  # the adapters keep time: their step may change on the way

    def step(self, inputs: list[float], dt: float) -> None:
        v = self.vehicle
        u = [min(max(a, lo), hi) for a, lo, hi in
             zip(inputs, v.lower.tolist(), v.upper.tolist(), strict=True)]
        before = v.state.tolist()
        after = rk4(v.model.f, before, u, dt)
        if self.kind == "multirotor":
            norm = math.sqrt(sum(c * c for c in after[6:10]))
            after[6:10] = [c / norm for c in after[6:10]]
            if after[2] <= 0.0 and sum(u) <= v.model.mass_kg * GRAVITY:
                after = self._resting(after)
        v.state[:] = after
        v.rate[:] = [(a - b) / dt for a, b in zip(after, before, strict=True)]
        v.applied[:] = u
        self.steps += 1

    def _resting(self, x: list[float]) -> list[float]:
        """On the ground without the thrust to lift: level, still, keeping its heading."""
        yaw = true_yaw(self.vehicle)
        return ([x[0], x[1], 0.0, 0.0, 0.0, 0.0, math.cos(yaw / 2), 0.0, 0.0,
                 math.sin(yaw / 2), 0.0, 0.0, 0.0])

    def kinematics(self) -> Kinematics:
        v = self.vehicle
        x = v.state.tolist()
        force_flu, rates_flu = body_motion(v)
        if self.kind == "multirotor":
            position, velocity, attitude = x[0:3], x[3:6], x[6:10]
        else:
            yaw = x[2]
            c, s = math.cos(yaw), math.sin(yaw)
            if self.kind == "car":
                velocity = [x[3] * c, x[3] * s, 0.0]
            else:  # vessel: surge and sway rotated into the world
                velocity = [x[3] * c - x[4] * s, x[3] * s + x[4] * c, 0.0]
            position = [x[0], x[1], 0.0]
            attitude = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]
        return Kinematics(enu_ned(position), enu_ned(velocity), attitude_enu_ned(attitude),
                          flu_frd(rates_flu), flu_frd(force_flu))
