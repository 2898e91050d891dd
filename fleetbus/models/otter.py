"""Otter USV: a 2 m twin-pontoon catamaran steered by two fixed propellers.

The Maritime Robotics Otter as modelled by T. I. Fossen, Handbook of Marine Craft
Hydrodynamics and Motion Control, 2nd ed., Wiley 2021, and in his open Python Vehicle
Simulator (github.com/cybergalactic/PythonVehicleSimulator, vehicles/otter.py), reduced
here to the horizontal plane (surge, sway, yaw). Figures from those sources:

- hull 55 kg, L = 2.0 m, B = 1.08 m; default payload 25 kg at midships; hull centre of
  gravity 0.2 m ahead of midships; yaw radius of gyration 0.25 L;
- pontoons 0.25 m wide whose centrelines, and the propellers, sit 0.395 m either side;
  block coefficient 0.4, from which the draft follows from the displacement;
- added mass by rule of thumb: X_udot = -0.1 m, Y_vdot = -1.5 m (m = hull mass 55 kg),
  N_rdot = -1.7 I_z;
- bollard pull of both propellers 24.4 kgf ahead and 13.6 kgf astern;
- linear surge damping set so that full ahead thrust balances at 6 knots; no linear sway
  damping; linear yaw damping from a 1 s yaw time constant, plus a quadratic yaw term ten
  times as large; sway and yaw cross-flow drag by strip theory with Hoerner's 2-D drag
  coefficient for one pontoon; the Munk moment in yaw is neglected, as Fossen does.

Not modelled: heave, roll and pitch (the restoring forces do not act in the plane), the
propellers' 1 s shaft-speed lag (inputs are forces, as for `Vessel`), wind and waves. The
hull is symmetric port/starboard, so the coefficients hold unchanged in our FLU body frame;
only the thruster lever arms change sign (port is +y).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from fleetbus.models.backend import backend
from fleetbus.models.checks import require_positive
from fleetbus.models.vessel import hull_rates

_G = 9.81  # m/s^2
_KNOT = 0.5144  # m/s
_CROSSFLOW_NODES = 4  # Gauss-Legendre: within 1 % of the exact integral in a hard turn


@dataclass(frozen=True)
class Otter:
    """State [x, y, yaw (ENU m, rad), u, v, r]: surge and sway velocity *through the
    water* (m/s, body FLU) and yaw rate (rad/s), as for `Vessel`. Input [surge force (N),
    yaw moment (N·m)], produced by the port and starboard propellers
    (`thrusters_from_forces` gives their thrusts). The current (`current_enu_mps`,
    constant in the world) carries the craft over ground."""

    mass_kg: float = 55.0  # hull
    payload_kg: float = 25.0  # Fossen's default load
    hull_cg_x_m: float = 0.2  # ahead of midships
    payload_x_m: float = 0.0
    yaw_gyration_radius_m: float = 0.5  # of the hull about its centre of gravity: 0.25 L
    length_m: float = 2.0
    beam_m: float = 1.08
    pontoon_beam_m: float = 0.25
    block_coefficient: float = 0.4  # of one pontoon
    water_density_kgm3: float = 1025.0
    # added mass, Fossen's rules of thumb for the default loading
    x_udot: float = -5.5  # -0.1 * 55 kg
    y_vdot: float = -82.5  # -1.5 * 55 kg
    n_rdot: float = -25.14  # -1.7 * 14.79 kg m^2 (Fossen's yaw inertia of the loaded hull)
    # damping
    x_u: float = -24.4 * _G / (6 * _KNOT)  # full bollard pull balances at 6 knots: -77.55
    n_r: float = -41.45  # yaw inertia with added mass (Fossen's 41.45) over a 1 s time constant
    n_rr: float = -414.5  # ten times n_r, per rad/s
    # Hoerner's 2-D coefficient for one pontoon at B/2T = 0.25 / (2 * 0.195 m) = 0.64
    crossflow_drag_coefficient: float = 1.0
    # propellers: one on each pontoon; bollard pull of each is half the craft's
    thruster_y_m: float = 0.395
    max_forward_thrust_n: float = 0.5 * 24.4 * _G  # 119.7 N each
    max_reverse_thrust_n: float = 0.5 * 13.6 * _G  # 66.7 N each
    # the yaw moment available at any surge force inside input_bounds (see there); default
    # l (T_fwd + T_rev) / 2, which makes that box the largest inside what the propellers reach
    max_yaw_moment_nm: float = 36.8
    current_enu_mps: tuple[float, float] = (0.0, 0.0)

    states: ClassVar[tuple[str, ...]] = ("x", "y", "yaw", "u", "v", "r")
    inputs: ClassVar[tuple[str, ...]] = ("surge_force", "yaw_moment")

    def __post_init__(self) -> None:
        require_positive(self, "mass_kg", "yaw_gyration_radius_m", "length_m", "beam_m",
                         "pontoon_beam_m", "block_coefficient", "water_density_kgm3",
                         "crossflow_drag_coefficient", "thruster_y_m",
                         "max_forward_thrust_n", "max_reverse_thrust_n", "max_yaw_moment_nm")
        # damping takes energy out, never puts it in; without surge damping the speed under
        # constant thrust would grow without bound
        if not self.x_u < 0:
            raise ValueError(f"Otter.x_u must be negative, got {self.x_u}")
        for name in ("n_r", "n_rr"):
            if not getattr(self, name) <= 0:
                raise ValueError(f"Otter.{name} must not be positive, got {getattr(self, name)}")
        if not self.payload_kg >= 0:
            raise ValueError(f"Otter.payload_kg must not be negative, got {self.payload_kg}")
        if not 2 * self.pontoon_beam_m <= self.beam_m:
            raise ValueError(f"Otter.pontoon_beam_m ({self.pontoon_beam_m}) does not fit "
                             f"twice in beam_m ({self.beam_m})")
        if not self.max_yaw_moment_nm <= self._max_differential_moment_nm:
            raise ValueError(
                f"Otter.max_yaw_moment_nm ({self.max_yaw_moment_nm}) exceeds what the "
                f"propellers can give at zero surge force "
                f"({self._max_differential_moment_nm:.2f} N·m)")
        if np.linalg.eigvalsh(self.mass_matrix).min() <= 0:
            raise ValueError("Otter mass matrix (rigid body + added mass) is not "
                             "positive definite")

    # --- mass properties of the loaded craft -----------------------------------------

    @property
    def total_mass_kg(self) -> float:
        return self.mass_kg + self.payload_kg

    @property
    def cg_x_m(self) -> float:
        """Centre of gravity of hull and payload, ahead of midships."""
        return ((self.mass_kg * self.hull_cg_x_m + self.payload_kg * self.payload_x_m)
                / self.total_mass_kg)

    @property
    def yaw_inertia_kgm2(self) -> float:
        """Of hull and payload (a point mass) about their common centre of gravity:
        14.44 kg m^2 by default. (Fossen's script shifts the whole hull mass by the loaded
        CG offset and gets 14.79; the 2 % difference is within the rules of thumb.)"""
        xg = self.cg_x_m
        return (self.mass_kg * (self.yaw_gyration_radius_m**2 + (self.hull_cg_x_m - xg)**2)
                + self.payload_kg * (self.payload_x_m - xg)**2)

    @property
    def draft_m(self) -> float:
        """Of the two pontoons, from the displaced volume and their block coefficient."""
        volume = self.total_mass_kg / self.water_density_kgm3
        return volume / (2 * self.block_coefficient * self.pontoon_beam_m * self.length_m)

    @property
    def mass_matrix(self) -> np.ndarray:
        """Rigid body (about midships) plus added mass, [u, v, r]."""
        m, xg = self.total_mass_kg, self.cg_x_m
        iz = self.yaw_inertia_kgm2 + m * xg * xg
        return np.array([
            [m - self.x_udot, 0.0, 0.0],
            [0.0, m - self.y_vdot, m * xg],
            [0.0, m * xg, iz - self.n_rdot],
        ])

    # --- propellers ---------------------------------------------------------------------

    @property
    def _max_differential_moment_nm(self) -> float:
        # zero surge force: one propeller ahead, the other astern, both at the weaker limit
        return 2 * self.thruster_y_m * min(self.max_forward_thrust_n, self.max_reverse_thrust_n)

    @property
    def max_surge_force_n(self) -> float:
        """Ahead, with max_yaw_moment_nm still available either way."""
        return 2 * self.max_forward_thrust_n - self.max_yaw_moment_nm / self.thruster_y_m

    @property
    def max_reverse_surge_force_n(self) -> float:
        """Astern (a positive number), with max_yaw_moment_nm still available."""
        return 2 * self.max_reverse_thrust_n - self.max_yaw_moment_nm / self.thruster_y_m

    @property
    def input_bounds(self) -> tuple[list[float], list[float]]:
        # The propellers reach the parallelogram |N| <= l (2 T_fwd - X) and
        # |N| <= l (2 T_rev + X) in (X, N); a controller wants a box. Every point of this
        # box is inside it: the yaw moment is capped at max_yaw_moment_nm and the surge
        # force keeps that much differential thrust in reserve. The ahead and astern
        # bounds differ because the propellers push harder ahead (24.4 vs 13.6 kgf).
        return ([-self.max_reverse_surge_force_n, -self.max_yaw_moment_nm],
                [self.max_surge_force_n, self.max_yaw_moment_nm])

    def thrusters_from_forces(self, surge_n: float, yaw_nm: float) -> tuple[float, float]:
        """(port, starboard) propeller thrusts (N, + ahead) that give this surge force and
        yaw moment (+ counter-clockwise, seen from above), each clipped to its limits."""
        half, diff = 0.5 * surge_n, 0.5 * yaw_nm / self.thruster_y_m
        lo, hi = -self.max_reverse_thrust_n, self.max_forward_thrust_n
        return (min(max(half - diff, lo), hi), min(max(half + diff, lo), hi))

    def forces_from_thrusters(self, port_n: float, starboard_n: float) -> tuple[float, float]:
        """(surge force N, yaw moment N·m) of the two propeller thrusts, each first clipped
        to its limits. Port (+y) pushing ahead turns the bow to starboard."""
        lo, hi = -self.max_reverse_thrust_n, self.max_forward_thrust_n
        port, starboard = min(max(port_n, lo), hi), min(max(starboard_n, lo), hi)
        return (port + starboard, self.thruster_y_m * (starboard - port))

    # --- dynamics -----------------------------------------------------------------------

    @cached_property
    def _coefficients(self) -> tuple[float, ...]:
        """Constants of f() as plain floats: cheaper than attributes or arrays per call."""
        m, xg = self.total_mass_kg, self.cg_x_m
        return (m, m * xg, m - self.x_udot, m - self.y_vdot)

    @cached_property
    def _mass_inverse(self) -> tuple[tuple[float, ...], ...]:
        return tuple(map(tuple, np.linalg.inv(self.mass_matrix).tolist()))

    @cached_property
    def _strips(self) -> tuple[tuple[float, float, float], ...]:
        """Cross-flow drag: (x, weight, weight * x) of Gauss-Legendre nodes along the hull,
        the weight including 1/2 rho T C_d."""
        nodes, weights = np.polynomial.legendre.leggauss(_CROSSFLOW_NODES)
        half = 0.5 * self.length_m
        k = (0.5 * self.water_density_kgm3 * self.draft_m * self.crossflow_drag_coefficient
             * half)
        return tuple((float(half * s), float(k * w), float(k * w * half * s))
                     for s, w in zip(nodes, weights, strict=True))

    def f(self, x: Any, u: Any) -> Any:
        k = backend(x, u)
        su, sv, r = x[3], x[4], x[5]
        m, mxg, m11, m22 = self._coefficients
        # Coriolis and centripetal forces, rigid body + added mass: C(nu) nu, minus the
        # Munk moment (m22 - m11) u v in yaw, which Fossen neglects for the Otter
        c_surge = -(m * sv + mxg * r) * r - (m22 - m) * sv * r
        c_sway = m11 * su * r
        c_yaw = mxg * su * r
        # cross-flow drag on the pontoons: -1/2 rho T C_d integral |v + x r| (v + x r) dx
        y_cf = n_cf = 0.0
        for xs, w, wx in self._strips:
            flow = sv + xs * r
            q = k.fabs(flow) * flow
            y_cf = y_cf - w * q
            n_cf = n_cf - wx * q
        f_surge = u[0] - c_surge + self.x_u * su
        f_sway = -c_sway + y_cf
        f_yaw = u[1] - c_yaw + (self.n_r + self.n_rr * k.fabs(r)) * r + n_cf
        return hull_rates(k, x, (f_surge, f_sway, f_yaw), self._mass_inverse,
                          self.current_enu_mps)

