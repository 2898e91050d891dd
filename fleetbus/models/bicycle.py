"""Kinematic bicycle: a car at moderate speed and lateral acceleration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fleetbus.models.backend import backend
from fleetbus.models.checks import require_positive


@dataclass(frozen=True)
class Bicycle:
    """State [x, y, yaw, speed] (ENU m, rad, m/s), plus `steer` (rad) when the steering
    has a lag; input [acceleration (m/s²), steering angle command (rad)]."""

    wheelbase_m: float = 2.7
    max_accel_mps2: float = 3.0
    max_decel_mps2: float = 6.0
    max_steer_rad: float = 0.55
    steer_time_constant_s: float = 0.0  # first-order steering lag; 0 = none
    max_speed_mps: float = 20.0

    inputs: ClassVar[tuple[str, ...]] = ("acceleration", "steering")

    def __post_init__(self) -> None:
        require_positive(self, "wheelbase_m", "max_accel_mps2", "max_decel_mps2",
                         "max_steer_rad", "max_speed_mps")
        if self.steer_time_constant_s < 0:
            raise ValueError("Bicycle.steer_time_constant_s must not be negative")

    @property
    def states(self) -> tuple[str, ...]:
        base = ("x", "y", "yaw", "speed")
        return (*base, "steer") if self.steer_time_constant_s else base

    @property
    def input_bounds(self) -> tuple[list[float], list[float]]:
        return ([-self.max_decel_mps2, -self.max_steer_rad],
                [self.max_accel_mps2, self.max_steer_rad])

    def f(self, x: Any, u: Any) -> Any:
        """ẋ for state x and input u."""
        m = backend(x, u)
        yaw, speed = x[2], x[3]
        steer = x[4] if self.steer_time_constant_s else u[1]
        rates = [speed * m.cos(yaw), speed * m.sin(yaw),
                 speed * m.tan(steer) / self.wheelbase_m, u[0]]
        if self.steer_time_constant_s:
            rates.append((u[1] - steer) / self.steer_time_constant_s)
        return m.stack(rates)

    def turn_radius_m(self, steer_rad: float) -> float:
        """Radius of the steady circle at a constant steering angle: L / tan δ."""
        import math

        return self.wheelbase_m / math.tan(steer_rad)
