"""Quadrotor at rotor level: four motor thrusts through a quad-X mixer, with attitude
dynamics — what the simulator integrates and the PX4/ArduPilot adapters drive."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from fleetbus.models.backend import backend
from fleetbus.models.checks import require_positive
from fleetbus.models.quadrotor import GRAVITY, thrust_and_rates

# PX4 quad-X motor layout, in our body frame (FLU, metres per unit arm) and spin:
# 1 front-right CCW, 2 rear-left CCW, 3 front-left CW, 4 rear-right CW (seen from above).
MOTORS: tuple[tuple[float, float, int], ...] = (
    (1.0, -1.0, +1), (-1.0, 1.0, +1), (1.0, 1.0, -1), (-1.0, -1.0, -1),
)
# Each motor's share of the body torques per unit thrust (times the arm's d, or the drag
# ratio), FLU: a thrust on the left (y > 0) turns the body about +x (roll right), one in
# front (x > 0) about -y (nose up); a rotor spinning counter-clockwise turns it clockwise.
_ROLL = tuple(y for _, y, _ in MOTORS)
_PITCH = tuple(-x for x, _, _ in MOTORS)
_YAW = tuple(-float(spin) for _, _, spin in MOTORS)


@dataclass(frozen=True)
class RotorQuadrotor:
    """State [p (3, ENU m), v (3, m/s), q (4, w x y z), ω (3, body FLU rad/s)]; input the
    four motor thrusts (N) in PX4 order."""

    mass_kg: float = 1.5
    arm_m: float = 0.25  # centre to motor
    inertia_kgm2: tuple[float, float, float] = (0.029, 0.029, 0.055)
    torque_per_thrust_m: float = 0.016  # rotor drag torque / thrust
    max_motor_thrust_n: float = 7.5
    drag_per_kg: float = 0.0
    wind_enu_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)

    states: ClassVar[tuple[str, ...]] = ("px", "py", "pz", "vx", "vy", "vz",
                                         "qw", "qx", "qy", "qz", "wx", "wy", "wz")
    inputs: ClassVar[tuple[str, ...]] = ("f1", "f2", "f3", "f4")

    def __post_init__(self) -> None:
        require_positive(self, "mass_kg", "arm_m", "inertia_kgm2", "max_motor_thrust_n")
        if not 4 * self.max_motor_thrust_n > self.mass_kg * GRAVITY:
            raise ValueError(f"RotorQuadrotor max_motor_thrust_n ({self.max_motor_thrust_n} N "
                             f"x 4) cannot lift {self.mass_kg} kg")

    @property
    def input_bounds(self) -> tuple[list[float], list[float]]:
        return [0.0] * 4, [self.max_motor_thrust_n] * 4

    @property
    def hover_input(self) -> list[float]:
        """The motor thrusts that hold the vehicle still in the air, level."""
        return [self.mass_kg * GRAVITY / 4] * 4

    def wrench(self, u: Any) -> tuple[Any, Any, Any, Any]:
        """Collective thrust and body torques (N, N·m) from the motor thrusts."""
        d, k = self.arm_m / math.sqrt(2), self.torque_per_thrust_m
        # written out term by term: the simulator and the HIL adapters call this four
        # times per physics step, and generator sums cost more than the arithmetic
        return (u[0] + u[1] + u[2] + u[3],
                d * (_ROLL[0] * u[0] + _ROLL[1] * u[1] + _ROLL[2] * u[2] + _ROLL[3] * u[3]),
                d * (_PITCH[0] * u[0] + _PITCH[1] * u[1] + _PITCH[2] * u[2]
                     + _PITCH[3] * u[3]),
                k * (_YAW[0] * u[0] + _YAW[1] * u[1] + _YAW[2] * u[2] + _YAW[3] * u[3]))

    def f(self, x: Any, u: Any) -> Any:
        wx, wy, wz = x[10], x[11], x[12]
        thrust, tx, ty, tz = self.wrench(u)
        jx, jy, jz = self.inertia_kgm2
        return backend(x, u).stack([
            *thrust_and_rates(x, thrust, (wx, wy, wz), self.mass_kg, self.drag_per_kg,
                              self.wind_enu_mps),
            # Euler's equations: J dw/dt = torque - w x (J w)
            (tx - (jz - jy) * wy * wz) / jx,
            (ty - (jx - jz) * wz * wx) / jy,
            (tz - (jy - jx) * wx * wy) / jz,
        ])
