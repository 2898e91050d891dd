"""Nonlinear model-predictive path tracking with CasADi, for every vehicle model.

The problem, over N steps of dt (multiple shooting, RK4 on the very `f` the simulator
integrates):

    state  z_k = [x_k; u_k]          the model state and the input last applied
    input  w_k = du/dt               the input's rate over stage k
    z_{k+1} = [rk4(f, x_k, v_k, dt); v_k],  v_k = u_k + w_k dt  (applied over stage k: the
              command sent now, v_0, acts at once),   z_0 = [x(now); u(last sent)]
    u_min <= u_k <= u_max,   |w_k| <= rate limits
    A_k p_k <= b_k + s_k,  s_k >= 0  (the planner's corridor, softened: an exact L1 penalty
                                      keeps the problem feasible under disturbance)
    floor - s_k <= z_k <= ceiling + s_k   (drones' altitude band, softened the same way: a
                                      drone outside it is brought back, not left failing)
    minimise  sum |p_k - p_ref,k|^2_Q + (speed_k - v_ref,k)^2 q_v + |u_k - u_ref|^2_R
              + |w_k|^2_W + rho s_k + q_h |t_k|^2 |(cos yaw_k, sin yaw_k) - t_k|^2
    where t_k is the reference's unit direction (cars and ships should face along it).

Carrying the input in the state is what makes the problem stage-wise: a cost on
u_k - u_{k-1} couples neighbouring stages, which the structure-exploiting solver (fatrop)
cannot see, and it then converges hundreds of times slower (measured here: 100 iterations
without convergence against 8). With the rate as the decision, input-rate limits are
plain bounds too.

Solvers: fatrop with automatic structure detection by default, IPOPT as the fallback
back-end; both warm-started from the previous solution shifted by one step. The solver
runs in a child process (fleetbus.control.solver_process), so that a solve that never
returns can be ended; the step is then tried from other guesses. The solver's
callbacks are compiled to C once and cached on disk (fleetbus.control.compiled): 1.5-2.7x
faster solves than CasADi's virtual machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import casadi as ca
import numpy as np

import fleetbus.models
from fleetbus.control.compiled import (
    build_once,
    cache_key,
    compiler_available,
    jit_name,
    jit_options,
    lock_file,
)
from fleetbus.control.solver_process import SolverProcess, SolverTimeout
from fleetbus.models import rk4

Solver = Literal["fatrop", "ipopt"]
log = logging.getLogger(__name__)
BIG_M = 1e9  # an infinite altitude bound, as a number the solver can take


@dataclass(frozen=True)
class VehicleModel:
    """What the controller needs of a model: its dynamics and limits, where its position
    and speed are in the state, the input that holds it steady, and input-rate limits."""

    kind: str
    model: Any
    nx: int  # state size
    position: tuple[int, ...]  # state indices of x, y (and z for drones)
    speed: Callable[[Any, Any], Any]  # speed along the path from the state and the path's
    # unit direction t (2,)
    heading: Callable[[Any], Any]  # unit vector (2,) the vehicle faces, from the state
    u_ref: tuple[float, ...]  # the input a steady vehicle needs (hover thrust, 0 ...)
    rate_limits: tuple[float, ...]  # |du/dt| per input
    input_weights: tuple[float, ...]  # R: cost per unit input squared, per input
    rate_weights: tuple[float, ...]  # W: cost per unit input rate squared

    @property
    def nu(self) -> int:
        return len(self.model.input_bounds[0])


def vehicle_model(kind: str, model: Any) -> VehicleModel:
    """The controller's view of one of fleetbus.models, with default limits and weights
    scaled to the model's own input ranges (so one set of numbers fits every size)."""
    lo, hi = (np.asarray(b, float) for b in model.input_bounds)
    span = hi - lo
    if kind == "car":
        return VehicleModel(kind, model, len(model.states), (0, 1), lambda x, t: x[3], _yaw_vector,
                            (0.0, 0.0),
                            (3.0, 0.6), tuple(0.1 / (span / 2) ** 2),
                            tuple(0.05 / span ** 2))
    if kind == "vessel":
        return VehicleModel(kind, model, 6, (0, 1), lambda x, t: x[3], _yaw_vector,
                            (0.0, 0.0),
                            tuple(span / 2), tuple(0.05 / (span / 2) ** 2),
                            tuple(0.05 / span ** 2))
    if kind == "quadrotor":
        hover = model.hover_thrust_n
        # Velocity along the path, linear in the state: |v| (smoothed at rest) made a
        # drone at rest on a straight line a saddle point, and cold starts failed there.
        return VehicleModel(kind, model, 10, (0, 1, 2), lambda x, t: x[3] * t[0] + x[4] * t[1],
                            _nose_vector, (hover, 0.0, 0.0, 0.0),
            (4 * hover, 6.0, 6.0, 3.0), tuple(0.05 / (span / 2) ** 2),
            tuple(0.01 / span ** 2))
    raise ValueError(f"no MPC model for vehicle type {kind!r}")


def _yaw_vector(x: Any) -> Any:
    return ca.vertcat(ca.cos(x[2]), ca.sin(x[2]))


def _nose_vector(x: Any) -> Any:
    """A drone's body x axis in the world, horizontal part (unit when level). Without a
    cost on it a drone at rest exactly on its line is a saddle point of the problem (yaw
    and roll are free and couple once it pitches): both solvers stalled there."""
    qw, qx, qy, qz = x[6], x[7], x[8], x[9]
    return ca.vertcat(1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy + qw * qz))


@dataclass(frozen=True)
class MpcSettings:
    horizon: int = 20
    dt: float = 0.1  # s per step
    solver: Solver = "fatrop"
    max_iter: int = 100  # cold starts from outside the corridor took up to 45
    tol: float = 1e-4
    position_weight: float = 1.0  # Q, per m^2
    speed_weight: float = 0.5  # per (m/s)^2
    heading_weight: float = 1.0  # per unit |heading - path tangent|^2 (unit vectors)
    slack_weight: float = 1000.0  # rho per m outside: 200 let a car recovering into its
    # lane overshoot the far edge by 0.2 m, 2000 stalled a drone starting 3 m under its floor
    corridor_rows: int = 8  # half-planes per stage (fewer are padded, more refused)
    budget_s: float = 0.08  # a solve slower than this is not used
    # a solve still running after this long is taken for hung (fatrop has been seen to
    # spin for good on a ship's problem): its process is killed and another started
    hang_after_s: float = 5.0
    jit: bool = True  # compile the solver's callbacks to C (when gcc is there), cached


PER_VEHICLE: dict[str, dict[str, Any]] = {
    # A ship answers its helm slowly (CyberShip II needs seconds to turn), so it looks
    # further ahead: with 2 s it drifted off the line and stayed there (RMSE 1.3 m, 0.2 m
    # with 4 s).
    "vessel": {"dt": 0.4},
    # A firmer nose-along-the-path cost: at 1.0 a drone at rest on its line took 126
    # iterations to leave the saddle point described at _nose_vector, at 3.0 35.
    "quadrotor": {"heading_weight": 3.0},
}


def default_settings(kind: str, **overrides: Any) -> MpcSettings:
    """Settings tuned per vehicle type, with `overrides` on top."""
    return replace(MpcSettings(), **(PER_VEHICLE.get(kind, {}) | overrides))


@dataclass
class MpcResult:
    """One control step's outcome. `command` is always finite and within limits."""

    command: np.ndarray
    status: str  # the solver's, or why a fallback was used
    solve_s: float
    iterations: int
    max_slack_m: float
    fallback: str = ""  # "" | "shifted" | "safe"
    predicted: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # states (N+1, nx)


class PathTrackingMpc:
    """Builds the problem once (per model and settings) and solves it every step."""

    def __init__(self, vehicle: VehicleModel, settings: MpcSettings = MpcSettings()) -> None:
        self.vehicle, self.settings = vehicle, settings
        self._layout = (vehicle.nx + vehicle.nu, vehicle.nu)  # stage: z, w, slack
        self.compiled = settings.jit and compiler_available()
        source: Path | ca.Function | None = None
        if self.compiled:
            key = self._cache_key()
            try:
                source = build_once("mpc", key, lambda: self.build_function(jit_name(key)))
            except RuntimeError as exc:  # no compiler after all, an unwritable directory
                log.warning("MPC: compiling the solver failed, running it uncompiled: %s",
                            exc)
                self.compiled = False
        if source is None:
            source = self.build_function()
        # The solver runs in a process of its own: one that never returns is killed there,
        # where a thread would spin on for good.
        self.process = SolverProcess(
            source, lock_file(source) if isinstance(source, Path) else None,
            f"{vehicle.kind} {settings.solver} MPC")
        del source
        self.process.await_ready()
        self._guess: np.ndarray | None = None  # the last solution, for warm starts
        self.fallbacks = Fallbacks(vehicle, settings)
        self.counters = self.fallbacks.counters
        self.last_hung: dict[str, np.ndarray] = {}  # the inputs of the last hung solve

    # -- the problem ----------------------------------------------------------------------

    def _cache_key(self) -> str:
        v = self.vehicle
        # a function by its name: its repr carries an address, new in every process, and
        # the cache would never hit (every controller start paid a 10-30 s compile)
        heading = f"{v.heading.__module__}.{v.heading.__qualname__}"
        description = repr((v.kind, v.model, v.nx, v.position, heading, v.u_ref,
                            v.rate_limits, v.input_weights, v.rate_weights, self.settings))
        models = Path(fleetbus.models.__file__).parent
        return cache_key(description, [Path(__file__), *models.glob("*.py")])

    def save_last_hung(self, directory: Path, name: str, keep: int = 20) -> Path:
        """Writes the inputs of the last solve that did not return (as np.load reads them,
        with the settings) to `directory`, keeping its newest `keep` files: what the solver
        was asked, to reproduce the hang."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{name}-{self.settings.solver}-{time.strftime('%Y%m%dT%H%M%S')}.npz"
        np.savez(path, settings=repr(self.settings), kind=self.vehicle.kind,
                 model=repr(self.vehicle.model), **self.last_hung)
        for old in sorted(directory.glob("*.npz"), key=lambda p: p.stat().st_mtime)[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def close(self) -> None:
        """Ends the solver's process (it also ends with this object, or this process)."""
        self.process.close()

    def build_function(self, compile_as: str | None = None) -> ca.Function:
        """The solver as a CasADi function of the parameters and the initial guess;
        `compile_as`: compile its callbacks to C under that name."""
        v, s = self.vehicle, self.settings
        N, nx, nu, m, dim = s.horizon, v.nx, v.nu, s.corridor_rows, len(v.position)
        lo, hi = (np.asarray(b, float) for b in v.model.input_bounds)
        opti = ca.Opti()
        z0 = opti.parameter(nx + nu)
        ref = opti.parameter(dim + 1, N + 1)  # reference position and speed per stage
        tangent = opti.parameter(2, N + 1)  # unit path direction per stage (0: none)
        A = opti.parameter(m * N, 2)
        b = opti.parameter(m * N)
        band = opti.parameter(2) if dim == 3 else None  # altitude floor, ceiling (drones)
        zs, ws, slacks = [], [], []
        # Variables are declared stage by stage, each stage's constraints right after:
        # the order fatrop's structure detection reads the stages from.
        for k in range(N + 1):
            zs.append(opti.variable(nx + nu))
            if k < N:
                ws.append(opti.variable(nu))
                slacks.append(opti.variable())
        cost = 0
        for k in range(N + 1):
            z = zs[k]
            x, u = z[:nx], z[nx:]
            if k == 0:
                opti.subject_to(z == z0)
            if k < N:
                w = ws[k]
                applied = u + w * s.dt
                opti.subject_to(zs[k + 1] == ca.vertcat(rk4(v.model.f, x, applied, s.dt),
                                                         applied))
                opti.subject_to(opti.bounded(-np.asarray(v.rate_limits), w,
                                             np.asarray(v.rate_limits)))
                opti.subject_to(slacks[k] >= 0)
                rows = slice(k * m, (k + 1) * m)
                xy = ca.vertcat(x[v.position[0]], x[v.position[1]])
                opti.subject_to(A[rows, :] @ xy <= b[rows] + slacks[k])
                if band is not None:
                    altitude = x[v.position[2]]
                    opti.subject_to(band[0] - altitude <= slacks[k])
                    opti.subject_to(altitude - band[1] <= slacks[k])
                cost += s.slack_weight * slacks[k] + ca.sumsqr(ca.sqrt(
                    ca.DM(v.rate_weights)) * w)
            if k > 0:
                opti.subject_to(opti.bounded(lo, u, hi))
            p = ca.vertcat(*[x[i] for i in v.position])
            cost += s.position_weight * ca.sumsqr(p - ref[:dim, k])
            cost += s.speed_weight * (v.speed(x, tangent[:, k]) - ref[dim, k]) ** 2
            cost += ca.sumsqr(ca.sqrt(ca.DM(v.input_weights)) * (u - ca.DM(v.u_ref)))
            t = tangent[:, k]  # zero where the path gives no direction
            cost += s.heading_weight * ca.sumsqr(t) * ca.sumsqr(v.heading(x) - t)
        opti.minimize(cost)
        common = {"expand": True, "print_time": False, "error_on_fail": False}
        if compile_as is not None:
            common |= jit_options(compile_as)
        if s.solver == "fatrop":
            opti.solver("fatrop", common | {"structure_detection": "auto",
                                            "fatrop": {"print_level": 0, "max_iter": s.max_iter,
                                                       "tol": s.tol}})
        else:
            opti.solver("ipopt", common | {"ipopt": {"print_level": 0, "sb": "yes",
                                                     "max_iter": s.max_iter, "tol": s.tol,
                                                     "max_wall_time": s.budget_s}})
        decision = ca.vertcat(*[ca.vertcat(zs[k], ws[k], slacks[k]) if k < N else zs[k]
                                for k in range(N + 1)])
        # Decision variables given as inputs are the solver's initial guess: warm starts.
        inputs = [z0, ref, tangent, A, b] + ([band] if band is not None else [])
        return opti.to_function("mpc", [*inputs, decision], [decision])

    # -- a control step -------------------------------------------------------------------

    def solve(self, x: np.ndarray, u_last: np.ndarray, ref: np.ndarray,
              corridor: list[tuple[np.ndarray, np.ndarray]], now_s: float,
              safe: Callable[[], np.ndarray],
              altitude: tuple[float, float] = (-math.inf, math.inf)) -> MpcResult:
        """One step from state x with `u_last` applied; ref (dim+1, N+1) positions and
        speeds; corridor: (A, b) per stage (N of them); `altitude` (floor, ceiling) in m for
        drones. `safe()` gives the vehicle's safe command when neither this solve nor the
        previous plan can be used."""
        v, s = self.vehicle, self.settings
        lo, hi = (np.asarray(bnd, float) for bnd in v.model.input_bounds)
        x = np.asarray(x, float)
        ref = np.asarray(ref, float)
        args = self.problem(x, u_last, ref, corridor, altitude)
        z0, A, b = args[0], args[3], args[4]
        finite = [np.all(np.isfinite(a)) for a in (x, u_last, ref, A, b)]
        if not all(finite):  # fatrop would spin on a NaN for a minute, not fail
            names = ("state", "last input", "reference", "corridor", "corridor")
            bad = sorted({n for n, ok in zip(names, finite, strict=True) if not ok})
            self.counters["solves"] += 1
            self.counters["failed"] += 1
            return self.fallbacks.fallback(now_s, f"not finite: {', '.join(bad)}", 0.0, 0,
                                           safe)
        # fatrop's restoration phase has hung on guesses that another guess then solved
        # (warm starts that a cold one solved in 6-14 iterations, a cold one that z0 held
        # still solved in 24): after a hang, the next guess at once, within the budget
        guesses = [self._warm_start(z0, ref)] if self._guess is not None else []
        guesses += [self._cold_start(z0, ref), self._still_start(z0)]
        began = time.perf_counter()
        self.counters["solves"] += 1
        hangs = 0
        for guess in guesses:
            ok, status, iterations, out = self._attempt(args, guess)
            if not status.startswith("hung ") or time.perf_counter() - began >= s.budget_s:
                break
            hangs += 1
        self.counters["recovered"] += ok and hangs > 0
        elapsed = time.perf_counter() - began
        if ok and elapsed > s.budget_s:
            ok, status = False, f"overrun ({elapsed * 1e3:.1f} ms)"
            self.counters["overrun"] += 1
        if not ok:
            self.counters["failed"] += 1
            return self.fallbacks.fallback(now_s, status, elapsed, iterations, safe)
        zs, _ws, slacks = self._unpack(out)
        self._guess = out
        inputs = zs[1:, v.nx:]  # the input applied over each stage, from now
        self.fallbacks.plan = (now_s, inputs)
        command = np.clip(inputs[0], lo, hi)
        return MpcResult(command, status, elapsed, iterations, float(np.max(slacks)),
                         predicted=zs[:, :v.nx])

    def problem(self, x: np.ndarray, u_last: np.ndarray, ref: np.ndarray,
                corridor: list[tuple[np.ndarray, np.ndarray]],
                altitude: tuple[float, float] = (-math.inf, math.inf)) -> list[np.ndarray]:
        """The solver function's inputs for a step, all but the initial guess (see solve)."""
        v = self.vehicle
        lo, hi = (np.asarray(bnd, float) for bnd in v.model.input_bounds)
        ref = np.asarray(ref, float)
        A, b = stack_corridor(corridor, self.settings)
        z0 = np.concatenate([np.asarray(x, float), np.clip(u_last, lo, hi)])
        args = [z0, ref, path_tangents(ref[:2]), A, b]
        if len(v.position) == 3:
            args.append(np.clip(altitude, -BIG_M, BIG_M))
        return args

    def hold(self, status: str, safe: Callable[[], np.ndarray]) -> MpcResult:
        """The safe command when there is nothing to solve (no path, no usable state)."""
        return self.fallbacks.hold(status, safe)

    def _attempt(self, args: list[np.ndarray], guess: np.ndarray
                 ) -> tuple[bool, str, int, np.ndarray | None]:
        """One call of the solver: (success, status, iterations, solution or None)."""
        s = self.settings
        try:
            answer = self.process.call([*args, guess], s.hang_after_s)
        except RuntimeError as exc:  # an evaluation error, or the solver's process died
            return False, f"error: {exc}"[:200], -1, None
        except SolverTimeout as exc:
            self.counters["hung"] += 1
            names = ("z0", "reference", "tangents", "corridor_A", "corridor_b", "altitude")
            self.last_hung = dict(zip([*names[:len(args)], "guess"], [*args, guess],
                                      strict=True))
            log.error("MPC: %s", exc)
            return False, f"hung (no answer in {s.hang_after_s:.1f} s)", -1, None
        out = answer.values.ravel()
        return (answer.success and bool(np.all(np.isfinite(out))), answer.status,
                answer.iterations, out)

    def _warm_start(self, z0: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """The previous solution shifted one stage (the last stage repeated); without one,
        a cold start."""
        s, (nz, nw) = self.settings, self._layout
        stage = nz + nw + 1
        if self._guess is None:
            return self._cold_start(z0, ref)
        stages = self._guess[: s.horizon * stage].reshape(s.horizon, stage)
        last = self._guess[s.horizon * stage:]
        shifted = np.vstack([stages[1:], np.concatenate([last, stages[-1, nz:]])])
        shifted[0, :nz] = z0
        return np.concatenate([shifted.ravel(), last])

    def _still_start(self, z0: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
        """z0 held over the horizon (the last guess after hangs); with `ref`, its position
        moved along the reference from stage 1 on (the cold start)."""
        s, (nz, nw) = self.settings, self._layout
        stages = np.tile(np.concatenate([z0, np.zeros(nw + 1)]), (s.horizon + 1, 1))
        if ref is not None:
            stages[1:, list(self.vehicle.position[:2])] = ref[:2, 1:].T
        return np.concatenate([stages[:-1].ravel(), stages[-1, :nz]])

    def _cold_start(self, z0: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """z0 with its position moved along the reference: z0 held still was a saddle point
        for a drone at rest exactly on its line (both solvers stalled there)."""
        return self._still_start(z0, ref)

    def _unpack(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, (nz, nw) = self.settings, self._layout
        stage = nz + nw + 1
        stages = out[: s.horizon * stage].reshape(s.horizon, stage)
        zs = np.vstack([stages[:, :nz], out[s.horizon * stage:]])
        return zs, stages[:, nz:nz + nw], stages[:, -1]


class Fallbacks:
    """What a controller sends when its solve cannot be used: the last good plan's input
    for now while that plan still covers now, else the vehicle's safe command; counted."""

    def __init__(self, vehicle: VehicleModel, settings: MpcSettings) -> None:
        self.vehicle, self.settings = vehicle, settings
        self.lo, self.hi = (np.asarray(b, float) for b in vehicle.model.input_bounds)
        self.plan: tuple[float, np.ndarray] | None = None  # (when, inputs (N, nu))
        # hung: calls not answered in time; recovered: solves that another guess then solved
        self.counters = {"solves": 0, "failed": 0, "overrun": 0, "hung": 0, "recovered": 0,
                         "shifted": 0, "safe": 0, "held": 0}

    def fallback(self, now_s: float, status: str, elapsed: float, iterations: int,
                 safe: Callable[[], np.ndarray]) -> MpcResult:
        """The command after a failed solve (the caller counted the failure)."""
        if self.plan is not None:
            when, inputs = self.plan
            # the stage of the previous plan that covers now (a hair early still counts:
            # rounding in the clock must not skip the plan)
            step = math.floor((now_s - when) / self.settings.dt + 1e-6)
            if now_s > when and step < len(inputs):
                self.counters["shifted"] += 1
                return MpcResult(np.clip(inputs[step], self.lo, self.hi), status, elapsed,
                                 iterations, math.nan, "shifted")
        self.counters["safe"] += 1
        return MpcResult(self.safe(safe), status, elapsed, iterations, math.nan, "safe")

    def hold(self, status: str, safe: Callable[[], np.ndarray]) -> MpcResult:
        self.counters["held"] += 1
        return MpcResult(self.safe(safe), status, 0.0, 0, math.nan, "safe")

    def safe(self, safe: Callable[[], np.ndarray]) -> np.ndarray:
        """`safe()` if it is a finite command of the right shape, else the trim input;
        within the input bounds either way."""
        command = np.asarray(safe(), float)
        if command.shape != self.lo.shape or not np.all(np.isfinite(command)):
            command = np.asarray(self.vehicle.u_ref, float)
        return np.clip(command, self.lo, self.hi)


def stack_corridor(cells: list[tuple[np.ndarray, np.ndarray]], settings: MpcSettings
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-stage half-planes (A, b) stacked, each stage padded to `corridor_rows` with
    0 x <= 1 (always true): the solver's corridor parameters."""
    rows, N = settings.corridor_rows, settings.horizon
    if len(cells) != N:
        raise ValueError(f"corridor: need {N} stages of (A, b), got {len(cells)}")
    A, b = np.zeros((rows * N, 2)), np.ones(rows * N)
    for k, (Ak, bk) in enumerate(cells):
        Ak, bk = np.atleast_2d(np.asarray(Ak, float)), np.asarray(bk, float).ravel()
        if len(bk) > rows or Ak.shape != (len(bk), 2):
            raise ValueError(f"corridor stage {k}: A {Ak.shape} and b {bk.shape} do not "
                             f"fit {rows} rows of 2")
        A[k * rows: k * rows + len(bk)] = Ak
        b[k * rows: k * rows + len(bk)] = bk
    return A, b


def path_tangents(xy: np.ndarray) -> np.ndarray:
    """Unit direction of travel along reference points (2, N+1), each stage's towards the
    next (the last repeats the one before); zero where the reference stands still."""
    step = np.diff(xy, axis=1)
    step = np.hstack([step, step[:, -1:]]) if step.shape[1] else np.zeros_like(xy)
    length = np.hypot(step[0], step[1])
    moving = length > 1e-6
    out = np.zeros_like(step)
    out[:, moving] = step[:, moving] / length[moving]
    return out
