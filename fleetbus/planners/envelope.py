"""What a vehicle can do, as the planner and the geofence guard both see it.

The guard stops a vehicle when the straight line along its velocity leaves the fence
within its margin: radius + k sigma + the distance covered before a command takes hold +
the stopping distance v^2/2a. A route that never looks like a breach to the guard must
therefore keep that much free space ahead at every point at the speed planned there;
`safe_speed` gives the fastest speed that does, and both sides read radius, sigma and
deceleration from the same envelope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VehicleEnvelope:
    """What the planner must know of a vehicle. turn_radius_m = 0: it turns on the spot.
    reaction_s is the time from the guard's decision to the vehicle acting on it (a guard
    tick and a control period, plus the estimate's age); tracking_tolerance_m how far the
    controller may stray from the path."""

    radius_m: float = 0.5
    max_speed_mps: float = 5.0
    max_accel_mps2: float = 1.0
    max_decel_mps2: float = 2.0
    max_lateral_accel_mps2: float = 2.0
    turn_radius_m: float = 0.0
    position_sigma_m: float = 0.0
    k_sigma: float = 3.0
    corridor_half_width_m: float = 20.0
    reaction_s: float = 0.0
    tracking_tolerance_m: float = 0.0

    def __post_init__(self) -> None:
        for name in ("radius_m", "position_sigma_m", "turn_radius_m", "reaction_s",
                     "tracking_tolerance_m", "k_sigma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"VehicleEnvelope.{name} must be finite and >= 0, got {value}")
        for name in ("max_speed_mps", "max_accel_mps2", "max_decel_mps2",
                     "max_lateral_accel_mps2", "corridor_half_width_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"VehicleEnvelope.{name} must be finite and > 0, got {value}")

    @property
    def static_margin_m(self) -> float:
        """Radius + k sigma: the least distance from the fence at rest."""
        return self.radius_m + self.k_sigma * self.position_sigma_m

    @property
    def margin_m(self) -> float:
        """Radius + k sigma + the stopping distance from top speed."""
        return self.static_margin_m + self.max_speed_mps**2 / (2.0 * self.max_decel_mps2)

    def safe_speed(self, free_ahead_m: np.ndarray) -> np.ndarray:
        """The fastest speed (capped at max_speed_mps) at which the guard's margin, plus the
        tracking tolerance, fits into `free_ahead_m` of free space straight ahead: the root
        of v^2/2a + v*reaction = free - static - tolerance (0 where even that is short)."""
        room = np.asarray(free_ahead_m, float) - self.static_margin_m - self.tracking_tolerance_m
        a, lag = self.max_decel_mps2, self.reaction_s
        with np.errstate(invalid="ignore"):  # inf room: no limit
            v = a * (np.sqrt(lag**2 + 2.0 * np.maximum(room, 0.0) / a) - lag)
        return np.minimum(np.nan_to_num(v, nan=self.max_speed_mps, posinf=self.max_speed_mps),
                          self.max_speed_mps)


# What each simulated vehicle can do with its default model. Sigma is the fusion's usual
# horizontal standard deviation with the simulator's default sensors.
ENVELOPES: dict[str, VehicleEnvelope] = {
    "quadrotor": VehicleEnvelope(
        radius_m=0.5, max_speed_mps=5.0, max_accel_mps2=2.0, max_decel_mps2=3.0,
        max_lateral_accel_mps2=3.0, turn_radius_m=0.0, position_sigma_m=0.4,
        reaction_s=0.25, tracking_tolerance_m=1.0),
    "car": VehicleEnvelope(
        radius_m=1.2, max_speed_mps=8.0, max_accel_mps2=2.0, max_decel_mps2=5.0,
        max_lateral_accel_mps2=3.0, turn_radius_m=5.0, position_sigma_m=0.2,
        reaction_s=0.25, tracking_tolerance_m=0.5),
    "vessel": VehicleEnvelope(
        radius_m=1.0, max_speed_mps=1.5, max_accel_mps2=0.2, max_decel_mps2=0.2,
        max_lateral_accel_mps2=0.3, turn_radius_m=4.0, position_sigma_m=0.2,
        reaction_s=0.25, tracking_tolerance_m=1.0),
}
