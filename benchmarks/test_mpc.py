"""Closed-loop MPC solve times (`python -m pytest benchmarks/test_mpc.py -s`; issue 7).

Each vehicle follows a circle through its corridor on the simulator's physics
(fleetbus.sim_bridge.closed_loop: the World, RK4 at 100 Hz, a command every 0.1 s) from rest
to rest: the car and the drone (at 5 m) a 15 m radius at up to 3 m/s, the ship a 10 m
radius at up to 0.8 m/s; 374 control steps (828 for the ship). Per case, in the same run
on the same path:

- (a) ours: fleetbus.control.tracking.PathController with the vehicle's default settings
  (fatrop, compiled callbacks, the 80 ms budget), as the controller node runs it;
- (b) plain: the very same optimal control problem in casadi.Opti + IPOPT, the way a
  typical user writes it (benchmarks/plain_mpc.py: MX, no expand, no compiled code, no
  time budget), with the same reference, warm start and fallback;
- (c) do-mpc: its MPC class on the same problem (benchmarks/mpc_peer.py: a discrete-time
  model with the same RK4 step, IPOPT), when do-mpc is installed;
- the speed study: ours with IPOPT instead of fatrop and without compiled callbacks
  (neither with a time budget), which shows what made the difference.

A step's time is the solver call (ours: the compiled function; plain: `opti.solve`;
do-mpc: `make_step`), never the reference or the physics. The first step is left out of
the percentiles: for Opti and do-mpc it also builds the IPOPT instance. Cross-track error
is every physics step's distance to the path line. Before the loops, one solve of the
same instance by the library (IPOPT, tight tolerance), the plain problem and do-mpc must
agree: the formulations are checked identical, not assumed.

Only correctness is asserted (every solve converges, the same tracking error within
TRACKING_TOL); speed is reported as ratios, with the issue's goals marked met or not.
The table is printed at the end and written to benchmarks/results/mpc.json. Building
ours' compiled solvers takes 5-20 s each, before and outside the timed loop.
(do-mpc: the `bench` extra, which `make bench` installs; it is no dependency of fleetbus.)
"""

from __future__ import annotations

import functools
import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import casadi as ca
import numpy as np
import pytest
import shapely
from rich.console import Console
from rich.table import Table
from shapely.geometry import LineString, Point, Polygon

from benchmarks.plain_mpc import PlainMpc, plain_controller, without_budget
from fleetbus.control.mpc import MpcSettings, PathTrackingMpc, default_settings, vehicle_model
from fleetbus.control.reference import PathReference
from fleetbus.control.tracking import PathController
from fleetbus.planners.corridor import convex_corridor
from fleetbus.planners.smoothing import speed_profile
from fleetbus.sim_bridge.closed_loop import Trace, run
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model

try:
    from benchmarks import mpc_peer
    DO_MPC_ERROR = ""
except Exception as exc:  # do-mpc missing or broken: reported with its own words
    mpc_peer = None  # type: ignore[assignment]
    DO_MPC_ERROR = f"{type(exc).__name__}: {exc}"

RESULTS = Path(__file__).parent / "results" / "mpc.json"
CASES = {"car N=20": ("car", 20), "car N=40": ("car", 40), "vessel N=20": ("vessel", 20),
         "quadrotor N=20": ("quadrotor", 20)}
ALTITUDE_M = 5.0  # the drone's, in a band of +-2 m
# Same problem, solved to the same tolerance: the executed trajectories may differ only by
# what the tolerance lets through, which adds up over hundreds of steps. 1 cm, or 5 % of
# ours where ours is larger.
TRACKING_TOL_M, TRACKING_TOL_REL = 0.01, 0.05
SAME_PROBLEM_TOL = 1e-6  # max difference of the predicted states, solved to 1e-10
LOOP_TIMEOUT_S = 1800  # a slow solver on the ship's 800 steps, plus ours' first compile
GOAL_RATIO, GOAL_TAIL, GOAL_DRONE_P50_MS = 3.0, 2.5, 5.0  # the issue's

# Filled by the tests, reported when the module is done.
LOOPS: dict[str, dict[str, Loop]] = {}
NOTES: dict[str, str] = {}
SAME: dict[str, dict[str, float]] = {}  # case: the largest difference to the library's


# -- the scenarios ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    kind: str
    points: np.ndarray  # (M, 2), or (M, 3) for the drone
    speeds: np.ndarray
    cells: list[tuple[np.ndarray, np.ndarray]]
    altitude: tuple[float, float]
    duration_s: float

    def reference(self) -> PathReference:
        """A fresh one per loop: it remembers how far along the path it is."""
        return PathReference(self.points, self.speeds, self.cells)

    @functools.cached_property
    def line(self) -> LineString:
        return LineString(self.points[:, :2])


@functools.cache
def scenario(kind: str) -> Scenario:
    """A full circle from rest to rest, starting at the origin heading east, through a
    free space with an island inside the circle (3 m from it), cut into convex cells."""
    speed, radius = (0.8, 10.0) if kind == "vessel" else (3.0, 15.0)
    th = np.linspace(0.0, 2 * np.pi, 121)
    pts = np.column_stack([radius * np.sin(th), radius - radius * np.cos(th)])
    free = Polygon([(-radius - 5, -5), (radius + 5, -5), (radius + 5, 2 * radius + 5),
                    (-radius - 5, 2 * radius + 5)]).difference(
        Point(0, radius).buffer(radius - 3))
    cells = [(c.A, c.b) for c in convex_corridor(pts[::10], free, 6.0)]
    s = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
    speeds = speed_profile(s, np.full(len(s), 1 / radius), speed, 2.0, 1.0, 1.0, 0.0, 0.0)
    traverse_s = float(np.sum(np.diff(s) / ((speeds[1:] + speeds[:-1]) / 2)))
    if kind == "quadrotor":
        pts = np.column_stack([pts, np.full(len(pts), ALTITUDE_M)])
        altitude = (ALTITUDE_M - 2.0, ALTITUDE_M + 2.0)
    else:
        altitude = (-math.inf, math.inf)
    # 3 s more to settle at the end: steps at rest are the cheapest, so not many of them
    return Scenario(kind, pts, speeds, cells, altitude, round(traverse_s + 3.0, 1))


# -- the controllers --------------------------------------------------------------------------


def settings(kind: str, horizon: int, **changes: Any) -> MpcSettings:
    return default_settings(kind, horizon=horizon, **changes)


def ours(kind: str, horizon: int, model: Any) -> PathController:
    return PathController(kind, model, settings(kind, horizon))


def study(kind: str, horizon: int, model: Any, **changes: Any) -> PathController:
    """Ours changed for the speed study, without the time budget: a slow variant is
    measured, not turned into fallbacks."""
    return PathController(kind, model, without_budget(settings(kind, horizon), **changes))


def plain(kind: str, horizon: int, model: Any) -> Any:
    return plain_controller(vehicle_model(kind, model), settings(kind, horizon))


def dompc(kind: str, horizon: int, model: Any) -> Any:
    if mpc_peer is None:
        pytest.skip(f"do-mpc unavailable: {DO_MPC_ERROR}")
    return mpc_peer.dompc_controller(vehicle_model(kind, model), settings(kind, horizon))


@dataclass(frozen=True)
class Controller:
    label: str
    what: str
    make: Callable[[str, int, Any], Any]


CONTROLLERS = {c.label: c for c in [
    Controller("ours", "(a) fleetbus: fatrop, SX, compiled callbacks", ours),
    Controller("plain", "(b) casadi.Opti + IPOPT, MX", plain),
    Controller("do-mpc", "(c) do-mpc MPC + IPOPT, SX", dompc),
    Controller("ours/fatrop/vm", "ours, fatrop, CasADi VM (jit off)",
               functools.partial(study, jit=False)),
    Controller("ours/ipopt/jit", "ours, IPOPT, compiled callbacks",
               functools.partial(study, solver="ipopt")),
    Controller("ours/ipopt/vm", "ours, IPOPT, CasADi VM (jit off)",
               functools.partial(study, solver="ipopt", jit=False)),
]}


# -- one closed loop -----------------------------------------------------------------------


@dataclass
class Loop:
    case: str
    controller: str
    steps: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    first_ms: float  # step 0, left out of the percentiles
    iterations_p50: float
    failed: int  # solves that did not converge (or errored, or overran ours' budget)
    fallbacks: int  # steps that used the previous plan or the safe command
    xtrack_rmse_m: float
    xtrack_max_m: float
    max_slack_m: float
    altitude_m: tuple[float, float]  # the drone's lowest and highest (nan for the others)
    build_s: float  # constructing the controller (ours: load or compile)
    # the solver's time in the problem's functions (its callbacks), and the rest
    callbacks_p50_ms: float = math.nan
    rest_p50_ms: float = math.nan
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def tail(self) -> float:
        return self.p99_ms / self.p50_ms


CALLBACK_STATS = ("t_wall_nlp_f", "t_wall_nlp_g", "t_wall_nlp_grad", "t_wall_nlp_grad_f",
                  "t_wall_nlp_hess_l", "t_wall_nlp_jac_g", "t_wall_callback_fun")


class Tap:
    """A controller as closed_loop.run drives it, noting after each step how long the
    solver spent evaluating the problem's functions (its callbacks: what SX and compiled
    code speed up), from the solver's statistics; the rest is the solver's own work."""

    def __init__(self, controller: Any, stats: Callable[[], dict[str, Any]]) -> None:
        self.controller, self.stats = controller, stats
        self.callback_s: list[float] = []

    def step(self, *args: Any) -> Any:
        result = self.controller.step(*args)
        try:
            stats = self.stats()
        except (AttributeError, RuntimeError):
            stats = {}
        self.callback_s.append(sum(float(stats[k]) for k in CALLBACK_STATS if k in stats)
                               if stats else math.nan)
        return result


def solver_stats(controller: Any) -> Callable[[], dict[str, Any]]:
    if isinstance(controller.mpc, PathTrackingMpc):  # the library keeps its Function private
        return lambda: controller.mpc._solver.stats()
    return controller.mpc.last_stats


def summarise(case: str, label: str, trace: Trace, sc: Scenario, build_s: float,
              mpc: Any, callback_s: list[float]) -> Loop:
    ms = trace.solve_ms[1:]
    callbacks_ms = np.asarray(callback_s[1:], float) * 1e3
    xy = trace.positions[:, :2]
    xtrack = shapely.distance(sc.line, shapely.points(xy))
    statuses: dict[str, int] = {}
    for r in trace.results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    z = trace.positions[:, 2] if sc.kind == "quadrotor" else np.full(1, math.nan)
    return Loop(
        case, label, len(trace.results), *np.percentile(ms, [50, 95, 99]).tolist(),
        float(ms.max()), float(trace.solve_ms[0]),
        float(np.median([r.iterations for r in trace.results])), mpc.counters["failed"],
        sum(1 for r in trace.results if r.fallback),
        float(np.sqrt(np.mean(xtrack ** 2))), float(xtrack.max()),
        float(np.nanmax([r.max_slack_m for r in trace.results])),
        (float(z.min()), float(z.max())), build_s,
        float(np.median(callbacks_ms)), float(np.median(ms - callbacks_ms)), statuses)


def closed_loop(case: str, label: str) -> Callable[[], Loop]:
    """The controller built (not timed: ours may compile) and the loop to run."""
    kind, horizon = CASES[case]
    sc = scenario(kind)
    model = make_model(kind)
    began = time.perf_counter()
    controller = CONTROLLERS[label].make(kind, horizon, model)
    build_s = time.perf_counter() - began
    if kind == "quadrotor":
        controller.follow(sc.reference(), sc.altitude)
    else:
        controller.follow(sc.reference())
    vehicle = SimVehicle("bench", kind, model,
                         initial_state(kind, model, {"z": ALTITUDE_M}))

    def loop() -> Loop:
        tap = Tap(controller, solver_stats(controller))
        trace = run(tap, vehicle, sc.duration_s)  # type: ignore[arg-type]
        result = summarise(case, label, trace, sc, build_s, controller.mpc, tap.callback_s)
        LOOPS.setdefault(case, {})[label] = result
        return result

    return loop


def ours_loop(case: str) -> Loop:
    """Ours on this case, run now if its own test has not run (or was deselected)."""
    return LOOPS.get(case, {}).get("ours") or closed_loop(case, "ours")()


# -- the same problem, checked ------------------------------------------------------------


@functools.cache
def check_same_problem(case: str) -> dict[str, float]:
    """One instance (the vehicle off its line, at rest; the drone also 1 m under its
    altitude band, so the softened band is active) solved to 1e-10 by the library (with
    IPOPT: fatrop's tolerance is looser), the plain problem and do-mpc: the predicted
    states must agree. Returns the largest difference of each."""
    kind, horizon = CASES[case]
    sc = scenario(kind)
    model = make_model(kind)
    vehicle = vehicle_model(kind, model)
    tight = without_budget(settings(kind, horizon), solver="ipopt", jit=False, tol=1e-10,
                           max_iter=1000)
    x = initial_state(kind, model, {"z": ALTITUDE_M})
    x[0], x[1] = 0.3, -0.4
    if kind == "quadrotor":
        x[2] = sc.altitude[0] - 1.0
    h = sc.reference().horizon(x[list(vehicle.position)], horizon, tight.dt)
    u_last = np.asarray(vehicle.u_ref, float)

    def safe() -> np.ndarray:
        return u_last

    args = (x, u_last, h.ref, h.corridor, 0.0, safe, sc.altitude)
    want = PathTrackingMpc(vehicle, tight).solve(*args)
    assert not want.fallback, f"{case}: the library's reference solve failed: {want.status}"
    others = {"plain": PlainMpc(vehicle, tight, tol=1e-10)}
    if mpc_peer is not None:
        others["do-mpc"] = mpc_peer.DoMpc(vehicle, tight, tol=1e-10)
    differences = {}
    for name, mpc in others.items():
        got = mpc.solve(*args)
        assert not got.fallback, f"{case}: {name} failed on the reference instance: {got.status}"
        differences[name] = float(np.abs(got.predicted - want.predicted).max())
        assert differences[name] < SAME_PROBLEM_TOL, (
            f"{case}: {name} solves a different problem: predicted states differ by "
            f"{differences[name]:.2e} from the library's")
    SAME[case] = differences
    return differences


# -- the benchmarks ------------------------------------------------------------------------


def converged(loop: Loop) -> None:
    assert loop.failed == 0 and loop.fallbacks == 0, (
        f"{loop.case} {loop.controller}: {loop.failed} failed solves, {loop.fallbacks} "
        f"fallbacks: {loop.statuses}")


def tracks_like_ours(loop: Loop, ref: Loop) -> None:
    allowed = max(TRACKING_TOL_M, TRACKING_TOL_REL * ref.xtrack_rmse_m)
    assert abs(loop.xtrack_rmse_m - ref.xtrack_rmse_m) <= allowed, (
        f"{loop.case}: {loop.controller} tracks to {loop.xtrack_rmse_m:.4f} m RMSE, ours to "
        f"{ref.xtrack_rmse_m:.4f} m (allowed difference {allowed:.3f} m)")


PARAMS = [pytest.param(case, label, id=f"{kind}-N{n}-{label.replace('/', '-')}")
          for case, (kind, n) in CASES.items() for label in CONTROLLERS]


@pytest.mark.timeout(LOOP_TIMEOUT_S)
@pytest.mark.parametrize(("case", "label"), PARAMS)
def test_closed_loop(benchmark, case: str, label: str) -> None:
    """The whole loop is one round (physics and reference included); the table holds the
    per-step solve times."""
    benchmark.group = f"mpc closed loop: {case}"
    if label in ("plain", "do-mpc"):
        if label == "do-mpc" and mpc_peer is None:
            NOTES["do-mpc"] = f"not run: {DO_MPC_ERROR}"
        check_same_problem(case)
    loop = benchmark.pedantic(closed_loop(case, label), rounds=1, iterations=1)
    converged(loop)
    if label != "ours":
        tracks_like_ours(loop, ours_loop(case))


# -- the report ----------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.2f}"


def _x(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _yes(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


def results_table(loops: dict[str, dict[str, Loop]]) -> Table:
    out = Table(title="MPC solve time per control step in ms, closed loop, same run and "
                      "machine, first step excluded; of the p50: in the problem's functions "
                      "(callbacks) and the rest; cross-track error in m", title_justify="left")
    for column in ("case", "controller", "steps", "p50", "p95", "p99", "p99/p50", "p50/ours",
                   "callbacks", "rest", "iters", "failed", "fallbacks", "RMSE", "max"):
        label_column = column in ("case", "controller")
        out.add_column(column, justify="left" if label_column else "right",
                       no_wrap=label_column)
    for case, by_label in loops.items():
        first = True
        for label in CONTROLLERS:
            loop = by_label.get(label)
            if loop is None:
                continue
            base = by_label.get("ours")
            ratio = loop.p50_ms / base.p50_ms if base else math.nan
            out.add_row(case if first else "", label, str(loop.steps),
                        _ms(loop.p50_ms), _ms(loop.p95_ms), _ms(loop.p99_ms), _x(loop.tail),
                        _x(ratio), _ms(loop.callbacks_p50_ms), _ms(loop.rest_p50_ms),
                        f"{loop.iterations_p50:g}",
                        str(loop.failed), str(loop.fallbacks), f"{loop.xtrack_rmse_m:.4f}",
                        f"{loop.xtrack_max_m:.3f}", end_section=label == list(CONTROLLERS)[-1])
            first = False
    out.caption = "; ".join(f"{label}: {c.what}" for label, c in CONTROLLERS.items())
    out.caption_justify = "left"
    return out


def goals(loops: dict[str, dict[str, Loop]]) -> list[dict[str, Any]]:
    """The issue's goals per case, where the loops they need ran."""
    rows = []
    for case, by_label in loops.items():
        a, b = by_label.get("ours"), by_label.get("plain")
        if a is None:
            continue
        row: dict[str, Any] = {"case": case, "ours_p50_ms": a.p50_ms, "ours_tail": a.tail,
                               "tail_ok": a.tail <= GOAL_TAIL}
        if b is not None:
            allowed = max(TRACKING_TOL_M, TRACKING_TOL_REL * a.xtrack_rmse_m)
            row |= {"plain_over_ours": b.p50_ms / a.p50_ms,
                    "plain_over_ours_p99": b.p99_ms / a.p99_ms,
                    "speed_ok": b.p50_ms / a.p50_ms >= GOAL_RATIO,
                    "tracking_difference_m": b.xtrack_rmse_m - a.xtrack_rmse_m,
                    "tracking_ok": abs(b.xtrack_rmse_m - a.xtrack_rmse_m) <= allowed}
        if case == "quadrotor N=20":
            row["drone_p50_ok"] = a.p50_ms <= GOAL_DRONE_P50_MS
        rows.append(row)
    return rows


def goals_table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title=f"Issue 7 goals: plain/ours p50 >= {GOAL_RATIO:g}x at equal tracking, "
                      f"ours p99 <= {GOAL_TAIL:g} x p50, quadrotor N=20 p50 <= "
                      f"{GOAL_DRONE_P50_MS:g} ms", title_justify="left")
    for column in ("case", "plain / ours p50", "(p99)", "equal tracking (d RMSE)", "met",
                   "ours p99/p50", "met", "ours p50", "met"):
        out.add_column(column, justify="left" if column == "case" else "right")
    for r in rows:
        has_b = "plain_over_ours" in r
        out.add_row(
            r["case"], _x(r["plain_over_ours"]) if has_b else "-",
            _x(r["plain_over_ours_p99"]) if has_b else "-",
            (f"{_yes(r['tracking_ok'])} ({r['tracking_difference_m']:+.4f} m)"
             if has_b else "-"),
            _yes(r["speed_ok"] and r["tracking_ok"]) if has_b else "-",
            _x(r["ours_tail"]), _yes(r["tail_ok"]), f"{_ms(r['ours_p50_ms'])} ms",
            _yes(r["drone_p50_ok"]) if "drone_p50_ok" in r else "-")
    return out


def study_lines(loops: dict[str, dict[str, Loop]]) -> list[str]:
    """What made the difference: each step of the ladder from plain to ours, as the
    factor it gained on the p50 (same problem, same loop)."""
    ladder = [("plain", "ours/ipopt/vm", "SX, expanded into one flat graph and called as one "
                                         "Function, instead of Opti's MX"),
              ("ours/ipopt/vm", "ours/ipopt/jit", "compiled callbacks, IPOPT"),
              ("ours/ipopt/vm", "ours/fatrop/vm", "fatrop instead of IPOPT, CasADi VM"),
              ("ours/ipopt/jit", "ours", "fatrop instead of IPOPT, compiled"),
              ("ours/fatrop/vm", "ours", "compiled callbacks, fatrop"),
              ("plain", "ours", "all of it")]
    lines = []
    for before, after, what in ladder:
        factors = []
        for case, by_label in loops.items():
            a, b = by_label.get(before), by_label.get(after)
            if a and b:
                factors.append(f"{case} {a.p50_ms / b.p50_ms:.2f}x")
        if factors:
            lines.append(f"{what} ({before} -> {after}): " + ", ".join(factors))
    return lines


def machine() -> dict[str, Any]:
    import os

    return {"date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "python": platform.python_version(),
            "casadi": ca.__version__,
            "do_mpc": mpc_peer.VERSION if mpc_peer is not None else DO_MPC_ERROR}


@pytest.fixture(scope="module", autouse=True)
def report(request) -> Iterator[None]:
    """After the module: the tables on the terminal, the figures in mpc.json."""
    yield
    if not LOOPS:
        return
    loops = {case: LOOPS[case] for case in CASES if case in LOOPS}
    rows = goals(loops)
    lines = study_lines(loops)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        **machine(),
        "scenarios": {kind: {"duration_s": scenario(kind).duration_s,
                             "path_m": scenario(kind).line.length,
                             "top_speed_mps": float(scenario(kind).speeds.max())}
                      for kind in {k for k, _ in CASES.values()}},
        "controllers": {label: c.what for label, c in CONTROLLERS.items()},
        "loops": {case: {label: asdict(loop) for label, loop in by.items()}
                  for case, by in loops.items()},
        "goals": rows, "speed_study": lines, "same_problem_max_difference": SAME,
        "notes": NOTES,
    }, indent=2) + "\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        console = Console(width=max(Console().width, 170))  # the table, unwrapped, in logs
        console.print(results_table(loops))
        console.print(goals_table(rows))
        console.print("Speed study, p50 factor per step of the ladder:")
        for line in lines:
            console.print(f"  {line}")
        if mpc_peer is None:
            console.print(f"do-mpc: not run: {DO_MPC_ERROR}")
        console.print(f"written to {RESULTS}")
