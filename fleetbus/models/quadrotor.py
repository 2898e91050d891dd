"""Quadrotor with collective thrust and body-rate inputs (the PX4 offboard interface)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fleetbus.models.backend import backend
from fleetbus.models.checks import require_positive

GRAVITY = 9.81


@dataclass(frozen=True)
class Quadrotor:
    """State [px, py, pz (ENU m), vx, vy, vz (m/s), qw, qx, qy, qz (body FLU → ENU)];
    input [collective thrust (N, along body z), roll, pitch, yaw rate (rad/s, body)].
    Body rates are taken as tracked instantly by the autopilot's inner loop."""

    mass_kg: float = 1.5
    max_thrust_n: float = 30.0  # all four motors together
    max_rate_rps: tuple[float, float, float] = (3.0, 3.0, 1.5)
    drag_per_kg: float = 0.0  # linear drag: a_drag = -drag_per_kg * (v - wind)
    wind_enu_mps: tuple[float, float, float] = (0.0, 0.0, 0.0)

    states: ClassVar[tuple[str, ...]] = ("px", "py", "pz", "vx", "vy", "vz",
                                         "qw", "qx", "qy", "qz")
    inputs: ClassVar[tuple[str, ...]] = ("thrust", "wx", "wy", "wz")

    def __post_init__(self) -> None:
        require_positive(self, "mass_kg", "max_rate_rps")
        if not self.max_thrust_n > self.mass_kg * GRAVITY:
            raise ValueError(f"Quadrotor.max_thrust_n ({self.max_thrust_n} N) cannot lift "
                             f"{self.mass_kg} kg ({self.mass_kg * GRAVITY:.1f} N)")
        if not self.drag_per_kg >= 0:
            raise ValueError(f"Quadrotor.drag_per_kg must not be negative, got {self.drag_per_kg}")

    @property
    def hover_thrust_n(self) -> float:
        return self.mass_kg * GRAVITY

    @property
    def hover_input(self) -> list[float]:
        """The input that holds the vehicle still in the air, level."""
        return [self.hover_thrust_n, 0.0, 0.0, 0.0]

    @property
    def input_bounds(self) -> tuple[list[float], list[float]]:
        wx, wy, wz = self.max_rate_rps
        return [0.0, -wx, -wy, -wz], [self.max_thrust_n, wx, wy, wz]

    def f(self, x: Any, u: Any) -> Any:
        return backend(x, u).stack(thrust_and_rates(
            x, u[0], (u[1], u[2], u[3]), self.mass_kg, self.drag_per_kg, self.wind_enu_mps))


def thrust_and_rates(x: Any, thrust: Any, rates: tuple[Any, Any, Any], mass_kg: float,
                     drag_per_kg: float, wind: tuple[float, float, float]) -> list[Any]:
    """ṗ, v̇ and q̇ of a rigid body pushed along its z axis and turning at body `rates`:
    the part every multirotor model shares. `x` starts with p, v, q (w, x, y, z)."""
    vx, vy, vz = x[3], x[4], x[5]
    qw, qx, qy, qz = x[6], x[7], x[8], x[9]
    wx, wy, wz = rates
    a = thrust / mass_kg
    ax, ay, az = vx - wind[0], vy - wind[1], vz - wind[2]  # velocity through the air
    return [
        vx, vy, vz,
        # the body z axis in the world frame, times thrust per mass
        a * 2 * (qx * qz + qw * qy) - drag_per_kg * ax,
        a * 2 * (qy * qz - qw * qx) - drag_per_kg * ay,
        a * (1 - 2 * (qx * qx + qy * qy)) - GRAVITY - drag_per_kg * az,
        # q̇ = ½ q ⊗ (0, ω)
        0.5 * (-qx * wx - qy * wy - qz * wz),
        0.5 * (qw * wx + qy * wz - qz * wy),
        0.5 * (qw * wy - qx * wz + qz * wx),
        0.5 * (qw * wz + qx * wy - qy * wx),
    ]
