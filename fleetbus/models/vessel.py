"""Surface vessel: Fossen's 3-DOF manoeuvring model with an ocean current.

Default parameters: CyberShip II, a 1:70 scale supply-ship model (L = 1.255 m, 23.8 kg),
identified by Skjetne, Smogeli and Fossen, "Modeling, identification, and adaptive
maneuvering of CyberShip II", Modeling, Identification and Control 25(1), 2004 (Tables 1,
2 and 4). The hull is symmetric port/starboard, so the coefficients hold unchanged in
our ENU/FLU frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from fleetbus.models.backend import backend
from fleetbus.models.checks import require_positive


@dataclass(frozen=True)
class Vessel:
    """State [x, y, yaw (ENU m, rad), u, v, r]: surge and sway velocity *through the
    water* (m/s, body FLU) and yaw rate (rad/s) — what a speed log measures. Input
    [surge force (N), yaw moment (N·m)]; the hull has no sway actuator. The current
    (`current_enu_mps`, constant in the world) carries the vessel over ground."""

    mass_kg: float = 23.8
    yaw_inertia_kgm2: float = 1.76
    cg_x_m: float = 0.046
    length_m: float = 1.255
    # added mass
    x_udot: float = -2.0
    y_vdot: float = -10.0
    y_rdot: float = 0.0
    n_vdot: float = 0.0
    n_rdot: float = -1.0
    # damping: linear, quadratic (|v|v style) and cubic surge
    x_u: float = -0.72253
    x_uu: float = -1.32742
    x_uuu: float = -5.86643
    y_v: float = -0.88965
    y_vv: float = -36.47287
    y_rv: float = -0.805
    y_r: float = -7.250
    y_vr: float = -0.845
    y_rr: float = -3.450
    n_v: float = 0.03130
    n_vv: float = 3.95645
    n_rv: float = 0.130
    n_r: float = -1.900
    n_vr: float = 0.080
    n_rr: float = -0.750
    # actuators: two main propellers of about 4.1 N each at 0.078 m either side
    max_surge_force_n: float = 8.2
    max_yaw_moment_nm: float = 0.64
    current_enu_mps: tuple[float, float] = (0.0, 0.0)

    states: ClassVar[tuple[str, ...]] = ("x", "y", "yaw", "u", "v", "r")
    inputs: ClassVar[tuple[str, ...]] = ("surge_force", "yaw_moment")

    def __post_init__(self) -> None:
        require_positive(self, "mass_kg", "yaw_inertia_kgm2", "length_m",
                         "max_surge_force_n", "max_yaw_moment_nm")
        if np.linalg.eigvalsh(self.mass_matrix).min() <= 0:
            raise ValueError("Vessel mass matrix (rigid body + added mass) is not "
                             "positive definite")

    @property
    def mass_matrix(self) -> np.ndarray:
        m, xg = self.mass_kg, self.cg_x_m
        return np.array([
            [m - self.x_udot, 0.0, 0.0],
            [0.0, m - self.y_vdot, m * xg - self.y_rdot],
            [0.0, m * xg - self.n_vdot, self.yaw_inertia_kgm2 - self.n_rdot],
        ])

    @cached_property
    def _mass_inverse(self) -> tuple[tuple[float, ...], ...]:
        """M⁻¹ as plain floats: constant, and cheaper to index than an array in f()."""
        return tuple(map(tuple, np.linalg.inv(self.mass_matrix).tolist()))

    @property
    def input_bounds(self) -> tuple[list[float], list[float]]:
        return ([-self.max_surge_force_n, -self.max_yaw_moment_nm],
                [self.max_surge_force_n, self.max_yaw_moment_nm])

    def f(self, x: Any, u: Any) -> Any:
        k = backend(x, u)
        su, sv, r = x[3], x[4], x[5]
        m, xg = self.mass_kg, self.cg_x_m
        # Coriolis and centripetal forces (rigid body + added mass): C(nu) nu
        c13 = -m * (xg * r + sv) + self.y_vdot * sv + 0.5 * (self.n_vdot + self.y_rdot) * r
        c23 = m * su - self.x_udot * su
        c_surge = c13 * r
        c_sway = c23 * r
        c_yaw = -c13 * su - c23 * sv
        # damping: D(nu) nu
        au, av, ar = k.fabs(su), k.fabs(sv), k.fabs(r)
        d_surge = -(self.x_u + self.x_uu * au + self.x_uuu * su * su) * su
        d_sway = (-(self.y_v + self.y_vv * av + self.y_rv * ar) * sv
                  - (self.y_r + self.y_vr * av + self.y_rr * ar) * r)
        d_yaw = (-(self.n_v + self.n_vv * av + self.n_rv * ar) * sv
                 - (self.n_r + self.n_vr * av + self.n_rr * ar) * r)
        f_surge, f_sway, f_yaw = u[0] - c_surge - d_surge, -c_sway - d_sway, u[1] - c_yaw - d_yaw
        return hull_rates(k, x, (f_surge, f_sway, f_yaw), self._mass_inverse,
                          self.current_enu_mps)


def hull_rates(k: Any, x: Any, forces: tuple[Any, Any, Any],
               mass_inverse: tuple[tuple[float, ...], ...],
               current_enu_mps: tuple[float, float]) -> Any:
    """State derivative of any 3-DOF hull from the net surge, sway and yaw forces: the
    body velocities (through the water) turned into ENU, plus the current."""
    yaw, su, sv, r = x[2], x[3], x[4], x[5]
    f_surge, f_sway, f_yaw = forces
    accel = [a * f_surge + b * f_sway + c * f_yaw for a, b, c in mass_inverse]
    cos, sin = k.cos(yaw), k.sin(yaw)
    cx, cy = current_enu_mps
    return k.stack([cos * su - sin * sv + cx, sin * su + cos * sv + cy, r, *accel])
