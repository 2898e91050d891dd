"""The MPC benchmark's peer: do-mpc (PyPI) on fleetbus's path-tracking problem
(benchmarks/test_mpc.py).

do-mpc installs beside numpy 2 and the CasADi fleetbus uses (it only adds pandas), so it
runs in the benchmark's own process and venv, through the same closed loop. It is not
a fleetbus dependency: without it the benchmark reports the import error.

How the problem is put to do-mpc (`do_mpc.controller.MPC`), as close to
fleetbus.control.mpc as its API allows:

- a discrete-time model (`Model("discrete")`, SX symbols) whose state is the model's
  state and the last applied input, and whose input is the input rate and the stage's
  slack; its step is the same RK4 of the same `f` with the input u + w dt acting over
  the stage (do-mpc's default for a
  continuous model, orthogonal collocation, would be a different discretisation, so a
  different problem and tracking error);
- the reference, path direction, corridor half-planes and the drone's altitude band as
  time-varying parameters (`_tvp`), one value per stage;
- the stage cost as `lterm` (stages 0..N-1) and the same terms at stage N as `mterm`;
  no input-change cost (`set_rterm` of zero: the rate is the decision and costed in the
  stage cost, as in fleetbus);
- input bounds as state bounds, rate limits and slack >= 0 as input bounds, the corridor
  and the altitude band as `set_nl_cons` (hard, with the stage's slack as a decision:
  do-mpc's own soft constraints would give every row its own slack, a different
  penalty);
- IPOPT (do-mpc's solver) with printing off and the library's tolerance; warm start as
  do-mpc does it (the previous solution, not shifted), from the library's cold start.

A step's time is `make_step` (do-mpc's controller step: its parameter set-up, the IPOPT
call and its bookkeeping).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import casadi as ca
import numpy as np

from benchmarks.plain_mpc import altitude_band, cold_start
from fleetbus.control.mpc import (
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

with warnings.catch_warnings():  # its optional extras (ONNX, OPC UA, torch) announce
    # themselves on import; none is used here
    warnings.simplefilter("ignore", UserWarning)
    import do_mpc

VERSION = do_mpc.__version__


class DoMpc:
    """do-mpc's MPC on the problem; `solve` has PathTrackingMpc's signature."""

    def __init__(self, vehicle: VehicleModel, settings: MpcSettings,
                 tol: float | None = None) -> None:
        self.vehicle, self.settings = vehicle, settings
        v, s = vehicle, settings
        nx, nu, m, dim = v.nx, v.nu, s.corridor_rows, len(v.position)
        lo, hi = (np.asarray(b, float) for b in v.model.input_bounds)
        model = do_mpc.model.Model("discrete")
        z = model.set_variable("_x", "z", shape=(nx + nu, 1))
        w = model.set_variable("_u", "w", shape=(nu, 1))
        model.set_variable("_u", "slack")
        model.set_variable("_tvp", "ref", shape=(dim + 1, 1))
        model.set_variable("_tvp", "tangent", shape=(2, 1))
        model.set_variable("_tvp", "A", shape=(m, 2))
        model.set_variable("_tvp", "b", shape=(m, 1))
        if dim == 3:
            model.set_variable("_tvp", "band", shape=(2, 1))  # altitude floor, ceiling
        x, u = z[:nx], z[nx:]
        applied = u + w * s.dt  # acts over the stage
        model.set_rhs("z", ca.vertcat(rk4(v.model.f, x, applied, s.dt), applied))
        model.setup()
        # setup() replaces every symbol by its own structure's: costs and constraints are
        # written in those
        z, w, slack = model.x["z"], model.u["w"], model.u["slack"]
        ref, t, A, b = (model.tvp[name] for name in ("ref", "tangent", "A", "b"))
        x, u = z[:nx], z[nx:]

        mpc = do_mpc.controller.MPC(model)
        mpc.settings.n_horizon = s.horizon
        mpc.settings.t_step = s.dt
        mpc.settings.store_full_solution = False
        mpc.settings.supress_ipopt_output()
        mpc.settings.nlpsol_opts["ipopt.tol"] = s.tol if tol is None else tol
        p = ca.vertcat(*[x[i] for i in v.position])
        stage = (s.position_weight * ca.sumsqr(p - ref[:dim])
                 + s.speed_weight * (v.speed(x, t) - ref[dim]) ** 2
                 + ca.sumsqr(ca.DM(np.sqrt(v.input_weights)) * (u - ca.DM(v.u_ref)))
                 + s.heading_weight * ca.sumsqr(t) * ca.sumsqr(v.heading(x) - t))
        lterm = (stage + s.slack_weight * slack
                 + ca.sumsqr(ca.DM(np.sqrt(v.rate_weights)) * w))
        mpc.set_objective(lterm=lterm, mterm=stage)
        mpc.set_rterm(rterm=ca.DM(0))  # no input-change cost (see the module docstring)
        mpc.bounds["lower", "_x", "z"] = np.r_[np.full(nx, -np.inf), lo]
        mpc.bounds["upper", "_x", "z"] = np.r_[np.full(nx, np.inf), hi]
        mpc.bounds["lower", "_u", "w"] = -np.asarray(v.rate_limits, float)
        mpc.bounds["upper", "_u", "w"] = np.asarray(v.rate_limits, float)
        mpc.bounds["lower", "_u", "slack"] = 0.0
        mpc.set_nl_cons("corridor", A @ p[:2] - b - slack, ub=0.0)
        if dim == 3:
            band = model.tvp["band"]
            mpc.set_nl_cons("altitude", ca.vertcat(band[0] - p[2], p[2] - band[1]) - slack,
                            ub=0.0)
        self._tvp = mpc.get_tvp_template()
        mpc.set_tvp_fun(lambda _t: self._tvp)
        with warnings.catch_warnings():  # do-mpc's own bound check calls numpy on CasADi
            # values, which CasADi 3.8 announces as a change of behaviour to come
            warnings.simplefilter("ignore", FutureWarning)
            mpc.setup()
        self.mpc = mpc
        self._fallbacks = Fallbacks(vehicle, settings)
        self.counters = self._fallbacks.counters

    def solve(self, x: np.ndarray, u_last: np.ndarray, ref: np.ndarray, corridor: list[Cell],
              now_s: float, safe: Callable[[], np.ndarray],
              altitude: tuple[float, float] = (-math.inf, math.inf)) -> MpcResult:
        v, s, mpc = self.vehicle, self.settings, self.mpc
        lo, hi = self._fallbacks.lo, self._fallbacks.hi
        x, ref = np.asarray(x, float), np.asarray(ref, float)
        z0 = np.concatenate([x, np.clip(u_last, lo, hi)])
        A, b = stack_corridor(corridor, s)
        tangent = path_tangents(ref[:2])
        m = s.corridor_rows
        for k in range(s.horizon + 1):
            self._tvp["_tvp", k, "ref"] = ref[:, k]
            self._tvp["_tvp", k, "tangent"] = tangent[:, k]
            j = min(k, s.horizon - 1)  # stage N has no corridor (nl_cons stop at N-1)
            self._tvp["_tvp", k, "A"] = A[j * m:(j + 1) * m]
            self._tvp["_tvp", k, "b"] = b[j * m:(j + 1) * m]
            if len(v.position) == 3:
                self._tvp["_tvp", k, "band"] = altitude_band(altitude)
        if self.counters["solves"] == 0:
            mpc.x0 = z0
            mpc.set_initial_guess()
            guess = cold_start(v, z0, ref, s.horizon)
            for k in range(s.horizon + 1):  # the library's cold start, not z0 held still
                mpc.opt_x_num["_x", k, 0, -1] = guess[:, k]
        self.counters["solves"] += 1
        began = time.perf_counter()
        try:
            out = np.asarray(mpc.make_step(z0), float).ravel()
            elapsed = time.perf_counter() - began
            stats = mpc.solver_stats
            ok = bool(stats.get("success", False)) and np.all(np.isfinite(out))
            status = str(stats.get("return_status", ""))
            iterations = int(stats.get("iter_count", -1))
        except RuntimeError as exc:
            elapsed = time.perf_counter() - began
            ok, status, iterations = False, f"error: {exc}"[:200], -1
        if not ok:
            self.counters["failed"] += 1
            return self._fallbacks.fallback(now_s, status, elapsed, iterations, safe)
        zs = np.array([np.asarray(mpc.opt_x_num["_x", k, 0, -1], float).ravel()
                       for k in range(s.horizon + 1)])
        slacks = np.array([float(mpc.opt_x_num["_u", k, 0][-1]) for k in range(s.horizon)])
        inputs = zs[1:, v.nx:]
        self._fallbacks.plan = (now_s, inputs)
        return MpcResult(np.clip(inputs[0], lo, hi), status, elapsed, iterations,
                         float(np.max(slacks)), predicted=zs[:, :v.nx])

    def hold(self, status: str, safe: Callable[[], np.ndarray]) -> MpcResult:
        return self._fallbacks.hold(status, safe)

    def last_stats(self) -> dict[str, Any]:
        """IPOPT's statistics of the last solve."""
        return dict(self.mpc.solver_stats)


def dompc_controller(vehicle: VehicleModel, settings: MpcSettings,
                     tol: float | None = None) -> PathController:
    return PathController(vehicle.kind, vehicle.model, mpc=DoMpc(vehicle, settings, tol))
