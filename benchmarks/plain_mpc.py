"""The MPC benchmark's plain baseline: fleetbus's path-tracking problem written the way a
typical CasADi user writes it, with `casadi.Opti` and IPOPT (benchmarks/test_mpc.py).

It is the same optimal control problem as fleetbus.control.mpc, term for term, so the
two track equally well and only the way it is built and solved differs:

- the same model `f`, integrated by the same RK4 (fleetbus.models.rk4), the same horizon
  and step, the state carrying the last applied input and the input rate as the
  decision (the input u_k + w_k dt acts over stage k);
- the same cost terms with the library's own weights (VehicleModel, MpcSettings), its own
  speed and heading expressions, the same input bounds, rate limits, corridor
  half-planes with one L1-penalised slack per stage, which also softens the drone's
  altitude band;
- the same reference (fleetbus.control.reference.PathReference, previous plan and all),
  the same warm start (the last solution shifted one stage; the same cold start) and
  the same fallback when a solve fails (the previous plan, then the safe command).

What is plain about it: matrix variables X, U, W, S; MX symbols (no `expand`), no compiled
callbacks, IPOPT; parameters given with `opti.set_value` and the initial guess with
`opti.set_initial` every step; no time budget (IPOPT runs until it converges, to the
library's tolerance, or fails: failures are counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import casadi as ca
import numpy as np

from fleetbus.control.mpc import (
    BIG_M,
    Fallbacks,
    MpcResult,
    MpcSettings,
    VehicleModel,
    path_tangents,
    stack_corridor,
)
from fleetbus.control.reference import Cell
from fleetbus.control.tracking import PathController
from fleetbus.models import rk4

IPOPT_MAX_ITER = 3000  # IPOPT's own default: "no budget", a stall shows as a failure


def altitude_band(altitude: tuple[float, float]) -> np.ndarray:
    """Floor and ceiling as the solver takes them: an infinite one as a big number."""
    return np.clip(np.asarray(altitude, float), -BIG_M, BIG_M)


def cold_start(vehicle: VehicleModel, z0: np.ndarray, ref: np.ndarray,
               horizon: int) -> np.ndarray:
    """States (nx + nu, N+1) for a first solve: z0 everywhere, positions on the reference
    (the library's cold start: z0 held still is a saddle point for a drone on its line)."""
    Z = np.tile(z0[:, None], (1, horizon + 1))
    Z[list(vehicle.position), :] = ref[: len(vehicle.position)]
    Z[:, 0] = z0
    return Z


class PlainMpc:
    """The problem in casadi.Opti, solved by IPOPT from MX, one `opti.solve` per step."""

    def __init__(self, vehicle: VehicleModel, settings: MpcSettings,
                 tol: float | None = None) -> None:
        self.vehicle, self.settings = vehicle, settings
        v, s = vehicle, settings
        N, nx, nu, m, dim = s.horizon, v.nx, v.nu, s.corridor_rows, len(v.position)
        lo, hi = (np.asarray(bnd, float) for bnd in v.model.input_bounds)
        rate = np.asarray(v.rate_limits, float)
        opti = ca.Opti()
        Z = opti.variable(nx + nu, N + 1)  # model state and applied input, per stage
        W = opti.variable(nu, N)  # input rate
        S = opti.variable(1, N)  # corridor slack
        X, U = Z[:nx, :], Z[nx:, :]
        z0 = opti.parameter(nx + nu)
        ref = opti.parameter(dim + 1, N + 1)
        tangent = opti.parameter(2, N + 1)
        A = opti.parameter(m * N, 2)
        b = opti.parameter(m * N)
        band = opti.parameter(2) if dim == 3 else None  # altitude floor, ceiling

        opti.subject_to(Z[:, 0] == z0)
        for k in range(N):
            applied = U[:, k] + W[:, k] * s.dt  # acts over stage k
            opti.subject_to(Z[:, k + 1] == ca.vertcat(rk4(v.model.f, X[:, k], applied, s.dt),
                                                      applied))
            xy = ca.vertcat(X[v.position[0], k], X[v.position[1], k])
            opti.subject_to(A[k * m:(k + 1) * m, :] @ xy <= b[k * m:(k + 1) * m] + S[k])
        opti.subject_to(opti.bounded(ca.repmat(-rate, 1, N), W, ca.repmat(rate, 1, N)))
        opti.subject_to(S >= 0)
        opti.subject_to(opti.bounded(ca.repmat(lo, 1, N), U[:, 1:], ca.repmat(hi, 1, N)))
        if band is not None:  # softened by the stage's slack, like the corridor
            altitude = X[v.position[2], :N]
            opti.subject_to(band[0] - altitude <= S)
            opti.subject_to(altitude - band[1] <= S)

        R, Wr = ca.DM(np.sqrt(v.input_weights)), ca.DM(np.sqrt(v.rate_weights))
        u_ref = ca.DM(v.u_ref)
        cost = 0
        for k in range(N + 1):
            x, u, t = X[:, k], U[:, k], tangent[:, k]
            p = ca.vertcat(*[x[i] for i in v.position])
            cost += s.position_weight * ca.sumsqr(p - ref[:dim, k])
            cost += s.speed_weight * (v.speed(x, t) - ref[dim, k]) ** 2
            cost += ca.sumsqr(R * (u - u_ref))
            cost += s.heading_weight * ca.sumsqr(t) * ca.sumsqr(v.heading(x) - t)
            if k < N:
                cost += s.slack_weight * S[k] + ca.sumsqr(Wr * W[:, k])
        opti.minimize(cost)
        opti.solver("ipopt", {"print_time": False},
                    {"print_level": 0, "sb": "yes", "tol": settings.tol if tol is None else tol,
                     "max_iter": IPOPT_MAX_ITER})
        self.opti = opti
        self._vars, self._params = (Z, W, S), (z0, ref, tangent, A, b, band)
        self._guess: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fallbacks = Fallbacks(vehicle, settings)
        self.counters = self._fallbacks.counters

    def solve(self, x: np.ndarray, u_last: np.ndarray, ref: np.ndarray, corridor: list[Cell],
              now_s: float, safe: Callable[[], np.ndarray],
              altitude: tuple[float, float] = (-math.inf, math.inf)) -> MpcResult:
        v, s, opti = self.vehicle, self.settings, self.opti
        Z, W, S = self._vars
        p_z0, p_ref, p_tangent, p_A, p_b, p_band = self._params
        lo, hi = self._fallbacks.lo, self._fallbacks.hi
        x, ref = np.asarray(x, float), np.asarray(ref, float)
        z0 = np.concatenate([x, np.clip(u_last, lo, hi)])
        A, b = stack_corridor(corridor, s)
        opti.set_value(p_z0, z0)
        opti.set_value(p_ref, ref)
        opti.set_value(p_tangent, path_tangents(ref[:2]))
        opti.set_value(p_A, A)
        opti.set_value(p_b, b)
        if p_band is not None:
            opti.set_value(p_band, altitude_band(altitude))
        Zg, Wg, Sg = self._warm_start(z0, ref)
        opti.set_initial(Z, Zg)
        opti.set_initial(W, Wg)
        opti.set_initial(S, Sg)
        self.counters["solves"] += 1
        began = time.perf_counter()
        try:
            sol = opti.solve_limited()  # returns on failure too: the stats say which
            elapsed = time.perf_counter() - began
            stats = opti.stats()
            ok = bool(stats.get("success", False))
            status = str(stats.get("return_status", ""))
            iterations = int(stats.get("iter_count", -1))
            out = tuple(np.atleast_2d(sol.value(var)) for var in (Z, W, S))
            ok = ok and all(np.all(np.isfinite(o)) for o in out)
        except RuntimeError as exc:  # an evaluation error inside IPOPT
            elapsed = time.perf_counter() - began
            ok, status, iterations = False, f"error: {exc}"[:200], -1
        if not ok:
            self.counters["failed"] += 1
            return self._fallbacks.fallback(now_s, status, elapsed, iterations, safe)
        Zs, Ws, Ss = out
        Zs = Zs.reshape(v.nx + v.nu, s.horizon + 1)
        self._guess = (Zs, Ws.reshape(v.nu, s.horizon), Ss.reshape(1, s.horizon))
        inputs = Zs[v.nx:, 1:].T  # the input each stage applies, u_1 first
        self._fallbacks.plan = (now_s, inputs)
        return MpcResult(np.clip(inputs[0], lo, hi), status, elapsed, iterations,
                         float(np.max(Ss)), predicted=Zs[:v.nx].T)

    def hold(self, status: str, safe: Callable[[], np.ndarray]) -> MpcResult:
        return self._fallbacks.hold(status, safe)

    def last_stats(self) -> dict[str, Any]:
        """The solver's statistics of the last solve."""
        return self.opti.stats()

    def _warm_start(self, z0: np.ndarray, ref: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last solution shifted one stage (the last repeated), starting at z0."""
        N, nu = self.settings.horizon, self.vehicle.nu
        if self._guess is None:
            return cold_start(self.vehicle, z0, ref, N), np.zeros((nu, N)), np.zeros((1, N))
        Z, W, S = (np.hstack([a[:, 1:], a[:, -1:]]) for a in self._guess)
        Z[:, 0] = z0
        return Z, W, S


def plain_controller(vehicle: VehicleModel, settings: MpcSettings,
                     tol: float | None = None) -> PathController:
    """The library's path following around the plain solver."""
    return PathController(vehicle.kind, vehicle.model, mpc=PlainMpc(vehicle, settings, tol))


def without_budget(settings: MpcSettings, **changes: Any) -> MpcSettings:
    """Settings for a measurement rather than a vehicle: no solve is cut short or
    discarded for time (the library's budget would turn slow solves into fallbacks)."""
    return replace(settings, budget_s=math.inf, **changes)
