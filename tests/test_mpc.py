"""Path-tracking MPC (issue 7) on the real models, closed loop with the simulator's World.

Every vehicle follows a straight line, a circle and a turn, each inside a convex corridor
that fleetbus.planners builds from a shapely free space, at a speed profile that starts
and ends at rest. Solver failures are forced (an iteration cap, an infeasible altitude
band, a zero time budget) to check the fallbacks, and a state that is not finite gets
the safe command without a solve.

Every solve here may take as long as it needs (NO_BUDGET_S): a slow or busy machine must
not change what the controller does, and timing is the benchmarks' business. The solver's
callbacks are compiled (jit) in one test only: a compile takes seconds to tens of seconds.

Cross-track error over every physics step (10 ms), default settings, measured here and
the bounds the tests hold (m):

    vehicle    path                            RMSE    max    bound RMSE  bound max
    car        straight 40 m                   0.002   0.008      0.02      0.05
    car        circle R 12 m                   0.020   0.030      0.05      0.08
    car        turn, corner rounded R 8 m      0.023   0.083      0.05      0.15
    quadrotor  straight 30 m                   0.000   0.001      0.02      0.05
    quadrotor  circle R 8 m                    0.003   0.011      0.02      0.05
    quadrotor  turn, sharp corner (stops)      0.008   0.049      0.03      0.10
    vessel     straight 20 m                   0.001   0.007      0.02      0.05
    vessel     circle R 10 m                   0.56    1.02       0.70      1.30
    vessel     turn, corner rounded R 12 m     0.44    0.97       0.60      1.30

Cars and drones reach 3 m/s, the ship (CyberShip II, 1.26 m long, weak yaw moment) 0.7 m/s.
Every physics step stays inside the cell of the step that commanded it, with 9 mm or more
to spare, and every predicted state inside its stage's cell, with slack below 1e-7 m. The
ship cuts inside its curves by up to a metre and does not settle back onto a straight line
once off it (test_a_ship_beside_a_straight_line_converges_to_it, expected to fail). Its
final approach is fragile: other geometries than these (a 20 m leg and R 10 m turn, a
slower circle) hit the iteration cap 1-11 times at walking pace in the last metre.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import casadi as ca
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, box
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union

from fleetbus.control.compiled import UNUSED_DAYS, build_once, compiler_available, lock_file
from fleetbus.control.mpc import (
    MpcResult,
    MpcSettings,
    PathTrackingMpc,
    default_settings,
    vehicle_model,
)
from fleetbus.control.reference import MIN_ADVANCE, Horizon, PathReference
from fleetbus.control.solver_process import SolverTimeout
from fleetbus.control.tracking import PathController
from fleetbus.models import Bicycle, rk4
from fleetbus.planners.corridor import CorridorCell, convex_corridor
from fleetbus.planners.smoothing import fillet_path, speed_profile
from fleetbus.sim_bridge.closed_loop import Trace, run
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model

DATA = Path(__file__).parent / "data"

N, DT = 20, 0.1
LANE = [(np.array([[0.0, 1.0], [0.0, -1.0]]), np.array([2.0, 2.0]))] * N  # |y| <= 2 m

KINDS = ("car", "vessel", "quadrotor")
NO_BUDGET_S = 10.0
PERIOD_S, PHYSICS_DT_S = 0.1, 0.01  # closed_loop.run's defaults
SUBSTEPS = round(PERIOD_S / PHYSICS_DT_S)
TOP_SPEED_MPS = {"car": 3.0, "vessel": 0.7, "quadrotor": 3.0}
# The ship's 8.2 N of surge force moves its 26 kg (with added mass) at 0.3 m/s^2 at most.
ACCEL_MPS2 = {"car": 1.0, "vessel": 0.1, "quadrotor": 1.0}
LATERAL_MPS2 = 2.0
ALTITUDE_M, BAND_M = 5.0, (4.0, 6.0)  # the drone's path altitude and its floor, ceiling
SOLVER_TOL = 1e-4  # the solvers' tolerance (MpcSettings.tol): constraints hold to this


def settings(kind: str, **overrides) -> MpcSettings:
    return default_settings(kind, jit=False, budget_s=NO_BUDGET_S, **overrides)


# -- courses: a path, its speed profile and its corridor, built as the planner does ------


@dataclass(frozen=True)
class Course:
    points: np.ndarray  # (M, 2) the path the vehicle follows
    speeds: np.ndarray  # (M,) its speed profile, from rest to rest
    cells: list[CorridorCell]
    free: BaseGeometry

    @property
    def line(self) -> LineString:
        return LineString(self.points)

    def reference(self, kind: str) -> PathReference:
        points = self.points
        if kind == "quadrotor":
            points = np.column_stack([points, np.full(len(points), ALTITUDE_M)])
        return PathReference(points, self.speeds, [(c.A, c.b) for c in self.cells])

    def duration_s(self, dt: float) -> float:
        """How long the reference takes to reach the path's end (it advances as
        PathReference's does, MIN_ADVANCE included)."""
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.points, axis=0),
                                                            axis=1))])
        floor = MIN_ADVANCE * self.speeds.max()
        travelled, t = 0.0, 0.0
        while travelled < s[-1]:
            travelled += max(float(np.interp(travelled, s, self.speeds)), floor) * dt
            t += dt
        return t


def course(kind: str, points: np.ndarray, curvature: np.ndarray, free: BaseGeometry,
           polyline: np.ndarray, half_width_m: float) -> Course:
    """The corridor is built on the planner's polyline, the path is what the vehicle
    follows (the polyline itself, or its fillets)."""
    cells = convex_corridor(polyline, free, half_width_m)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    speeds = speed_profile(s, curvature, TOP_SPEED_MPS[kind], LATERAL_MPS2, ACCEL_MPS2[kind],
                           ACCEL_MPS2[kind])
    # The test means something only if the path itself is inside the corridor.
    inside = np.any([c.contains(points, 1e-9) for c in cells], axis=0)
    assert inside.all(), "the test's path leaves its own corridor"
    return Course(points, speeds, cells, free)


def sampled(polyline: np.ndarray, step_m: float) -> np.ndarray:
    """The polyline with points at most step_m apart, every vertex kept."""
    pieces = [np.linspace(a, b, max(2, math.ceil(np.linalg.norm(b - a) / step_m) + 1))[:-1]
              for a, b in itertools.pairwise(polyline)]
    return np.vstack([*pieces, polyline[-1:]])


def straight(kind: str) -> Course:
    length = {"car": 40.0, "vessel": 20.0, "quadrotor": 30.0}[kind]
    polyline = np.array([[0.0, 0.0], [length / 2, 0.0], [length, 0.0]])
    points = sampled(polyline, 0.5)
    return course(kind, points, np.zeros(len(points)), box(-5, -2, length + 5, 2), polyline,
                  3.0)


def circle(kind: str) -> Course:
    """A full circle, anticlockwise from the origin heading east, in a ring 4 m wide; the
    corridor is built on its 12 chords. The ring is a 12-gon: the cells of a finer one
    have more sides than the controller takes (MpcSettings.corridor_rows)."""
    radius = {"car": 12.0, "vessel": 10.0, "quadrotor": 8.0}[kind]
    angle = np.linspace(0.0, 2 * np.pi, 241)
    points = np.column_stack([radius * np.sin(angle), radius * (1 - np.cos(angle))])
    centre = Point(0.0, radius)
    free = centre.buffer(radius + 2, quad_segs=3).difference(centre.buffer(radius - 2,
                                                                            quad_segs=3))
    return course(kind, points, np.full(len(points), 1 / radius), free, points[::20], 4.0)


def turn(kind: str) -> Course:
    """East, then a left turn into a street going north: the corner rounded to a radius
    the vehicle can follow at speed (the car turns no tighter than 4.4 m), or, for the
    drone, left sharp: the speed profile stops it there and it turns on the spot."""
    leg, radius, width = {"car": (25.0, 8.0, 3.0), "vessel": (25.0, 12.0, 4.0),
                          "quadrotor": (15.0, 0.0, 3.0)}[kind]
    polyline = np.array([[0.0, 0.0], [leg, 0.0], [leg, leg]])
    free = unary_union([box(-5, -width, leg + width, width),
                        box(leg - width, -width, leg + width, leg + 5)])
    if radius:
        smooth = fillet_path(polyline, free, radius)
        assert smooth.ok, smooth.tight_corners
        points, curvature = smooth.points, smooth.curvature
    else:
        points = sampled(polyline, 0.5)
        curvature = np.where(np.all(points == polyline[1], axis=1), np.inf, 0.0)
    return course(kind, points, curvature, free, polyline, width + 2)


COURSES = {"straight": straight, "circle": circle, "turn": turn}

# RMSE and max cross-track bounds (m): see the table in the module docstring.
BOUNDS = {("car", "straight"): (0.02, 0.05), ("car", "circle"): (0.05, 0.08),
          ("car", "turn"): (0.05, 0.15),
          ("quadrotor", "straight"): (0.02, 0.05), ("quadrotor", "circle"): (0.02, 0.05),
          ("quadrotor", "turn"): (0.03, 0.10),
          ("vessel", "straight"): (0.02, 0.05), ("vessel", "circle"): (0.70, 1.30),
          ("vessel", "turn"): (0.60, 1.30)}


# -- the closed loop ----------------------------------------------------------------------


class RecordingController(PathController):
    """A PathController that keeps the horizon (reference and cells) of every step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.horizons: list[Horizon | None] = []

    def step(self, now_s, x, u_last, safe) -> MpcResult:
        result = super().step(now_s, x, u_last, safe)
        self.horizons.append(self.horizon)
        return result


@dataclass
class Flight:
    controller: RecordingController
    vehicle: SimVehicle
    trace: Trace

    @property
    def xy(self) -> np.ndarray:
        return self.trace.positions[:, :2]

    def steps(self):
        """Per control step: its result, its horizon and the physics steps it commanded."""
        states = np.array(self.trace.states)
        for i, (result, horizon) in enumerate(zip(self.trace.results, self.controller.horizons,
                                                  strict=True)):
            yield result, horizon, states[i * SUBSTEPS:(i + 1) * SUBSTEPS]


def fly(kind: str, reference: PathReference, duration_s: float, start: dict | None = None,
        altitude: tuple[float, float] = BAND_M, **overrides) -> Flight:
    model = make_model(kind)
    controller = RecordingController(kind, model, settings(kind, **overrides))
    controller.follow(reference, altitude)
    vehicle = SimVehicle("v", kind, model,
                         initial_state(kind, model, start or {"z": ALTITUDE_M}))
    return Flight(controller, vehicle, run(controller, vehicle, duration_s, PERIOD_S,
                                           PHYSICS_DT_S))


def assert_commands_valid(results: list[MpcResult], model) -> None:
    lo, hi = (np.asarray(b, float) for b in model.input_bounds)
    commands = np.array([r.command for r in results])
    assert np.all(np.isfinite(commands))
    assert np.all(commands >= lo) and np.all(commands <= hi)


def violation(cell: tuple[np.ndarray, np.ndarray], xy: np.ndarray) -> np.ndarray:
    """How far each point (..., 2) is outside the cell (negative: inside)."""
    A, b = cell
    return np.max(np.asarray(xy) @ A.T - b, axis=-1)


def cross_track(flight: Flight, line: LineString) -> np.ndarray:
    return shapely.distance(line, shapely.points(flight.xy))


# -- tracking inside the corridor -----------------------------------------------------------


@pytest.mark.parametrize("shape", list(COURSES))
@pytest.mark.parametrize("kind", KINDS)
def test_each_vehicle_tracks_its_path_inside_the_corridor_to_the_end(kind, shape):
    path = COURSES[shape](kind)
    margin_s = 15.0 if kind == "vessel" else 5.0  # the ship comes to rest slowly
    flight = fly(kind, path.reference(kind), path.duration_s(PERIOD_S) + margin_s)
    mpc = flight.controller.mpc
    assert mpc.counters["failed"] == 0 and mpc.counters["held"] == 0
    assert not any(r.fallback for r in flight.trace.results)
    assert_commands_valid(flight.trace.results, flight.vehicle.model)

    error = cross_track(flight, path.line)
    rmse_bound, max_bound = BOUNDS[kind, shape]
    assert math.sqrt(np.mean(error ** 2)) < rmse_bound and error.max() < max_bound

    # Every physics step inside the cell the controller held the vehicle to at the step
    # that commanded it (stage 0's), every predicted state inside its stage's cell, and
    # no slack needed: the vehicle started inside.
    for result, horizon, states in flight.steps():
        assert np.all(violation(horizon.corridor[0], states[:, :2]) <= 0.0)
        assert result.max_slack_m < SOLVER_TOL
        predicted = result.predicted[:, :2]
        for k, cell in enumerate(horizon.corridor):
            assert violation(cell, predicted[k]) <= result.max_slack_m + SOLVER_TOL
        if kind == "quadrotor":  # the band binds every predicted stage after the first
            z = result.predicted[1:, 2]
            assert np.all(z >= BAND_M[0] - SOLVER_TOL) and np.all(z <= BAND_M[1] + SOLVER_TOL)
    if kind == "quadrotor":
        z = flight.trace.positions[:, 2]
        assert BAND_M[0] <= z.min() and z.max() <= BAND_M[1]

    # At the end of the path; cars and drones at rest there. The ship, which cannot move
    # sideways, is still manoeuvring onto the end point of the circle 15 s after its
    # reference got there (0.15 m of path left, 0.22 m off the point).
    end_m = 0.5 if kind == "vessel" else 0.05
    assert flight.controller.horizon.remaining_m < end_m / 2
    assert np.linalg.norm(flight.xy[-1] - path.points[-1]) < end_m
    if kind != "vessel":
        velocity = flight.vehicle.state[3:6] if kind == "quadrotor" else flight.vehicle.state[3]
        assert np.linalg.norm(velocity) < 0.01


# -- recovering into the corridor ---------------------------------------------------------

# (kind, lane half-width, start offset) in m. The car and the drone start 3 m beside a
# lane 2 m wide; the ship, 1.26 m long and slow to turn, 1 m outside a channel 4 m wide:
# from 2 m outside a 2 m lane it scrapes along the lane's edge with iteration-cap
# failures (14 in 70 s; reported).
OUTSIDE = [("car", 1.0, 3.0), ("quadrotor", 1.0, 3.0), ("vessel", 2.0, 3.0)]


@pytest.mark.parametrize(("kind", "half_width_m", "offset_m"), OUTSIDE)
def test_a_vehicle_outside_its_corridor_steers_back_in(kind, half_width_m, offset_m):
    length = 40.0
    polyline = np.array([[0.0, 0.0], [length / 2, 0.0], [length, 0.0]])
    points = sampled(polyline, 0.5)
    path = course(kind, points, np.zeros(len(points)),
                  box(-5, -half_width_m, length + 5, half_width_m), polyline, 3.0)
    flight = fly(kind, path.reference(kind), 30.0, {"y": offset_m, "z": ALTITUDE_M})
    mpc = flight.controller.mpc
    # The ship's solves fail now and then (1 in 300 here: its hull's |v| damping terms
    # are not smooth at zero sway and yaw rate); each is covered by the previous plan.
    assert mpc.counters["failed"] <= (3 if kind == "vessel" else 0)
    assert all(r.fallback in ("", "shifted") for r in flight.trace.results)
    assert_commands_valid(flight.trace.results, flight.vehicle.model)

    outside_m = np.abs(flight.xy[:, 1]) - half_width_m
    assert outside_m[0] == pytest.approx(offset_m - half_width_m)
    entered = int(np.argmax(outside_m <= 0.0))
    assert 0 < entered * PHYSICS_DT_S < 6.0
    # Back in, it stays in and ends in. The drone comes back at 3.5 m/s sideways and
    # overshoots the far edge by 6 cm: its plans ride the edge, and the model takes each
    # command to act one stage later than it does (reported).
    assert outside_m[entered:].max() <= (0.1 if kind == "quadrotor" else 0.01)
    assert outside_m[-1] <= 0.0
    # The slack is the start's distance outside at first (the state at stage 0 is given),
    # no more than the overshoot once back in, and nothing in the second half.
    # (a step on the previous plan solved nothing: no slack of its own)
    slack = np.nan_to_num([r.max_slack_m for r in flight.trace.results])
    assert slack[0] == pytest.approx(offset_m - half_width_m, abs=1e-3)
    assert np.all(slack[entered // SUBSTEPS + 1:] <= 0.1)
    assert np.all(slack[len(slack) // 2:] < SOLVER_TOL)
    # On the line by the end; the ship only inside its channel: it swings across it (up
    # to 1.7 m off the line 10-30 s after the start), see the expected failure below.
    error = cross_track(flight, path.line)
    assert error[-500:].max() < (half_width_m if kind == "vessel" else 0.01)


def test_a_ship_beside_a_straight_line_converges_to_it():
    length = 40.0
    polyline = np.array([[0.0, 0.0], [length, 0.0]])
    path = course("vessel", sampled(polyline, 0.5), np.zeros(81), box(-5, -5, 45, 5),
                  polyline, 6.0)
    flight = fly("vessel", path.reference("vessel"), 40.0, {"y": 1.0})
    error = cross_track(flight, path.line)
    assert error[-1000:].max() < 0.3


# -- drones: the altitude band --------------------------------------------------------------


def drone_line(altitude_m: float) -> PathReference:
    polyline = np.array([[0.0, 0.0], [20.0, 0.0]])
    points = sampled(polyline, 0.5)
    path = course("quadrotor", points, np.zeros(len(points)), box(-5, -2, 25, 2), polyline,
                  3.0)
    return PathReference(np.column_stack([points, np.full(len(points), altitude_m)]),
                         path.speeds, [(c.A, c.b) for c in path.cells])


def test_a_drone_below_its_floor_climbs_into_the_band():
    flight = fly("quadrotor", drone_line(ALTITUDE_M), 8.0, {"z": 1.0})
    assert flight.controller.mpc.counters["failed"] == 0
    z = flight.trace.positions[:, 2]
    reached = int(np.argmax(z >= BAND_M[0]))
    assert reached > 0 and np.all(np.diff(z[:reached]) >= -1e-3)  # it climbs to the floor
    assert BAND_M[0] <= z[-1] <= BAND_M[1]


def test_a_drone_stays_under_its_ceiling_when_the_path_is_above_it():
    flight = fly("quadrotor", drone_line(8.0), 6.0)
    assert flight.controller.mpc.counters["failed"] == 0
    assert flight.trace.positions[:, 2].max() <= BAND_M[1] + 0.05


# -- failures and fallbacks ---------------------------------------------------------------


def drive(mpc: PathTrackingMpc, steps: int, start_y: float = 1.0):
    """A car on a straight lane at 4 m/s, the reference running on a clock."""
    model, n = mpc.vehicle.model, mpc.settings.horizon
    lane = LANE[:1] * n
    x, u = np.array([0.0, start_y, 0.0, 0.0]), np.zeros(2)
    lo, hi = (np.asarray(b) for b in model.input_bounds)
    results, errors = [], []
    for step in range(steps):
        t = step * DT
        ts = t + np.arange(n + 1) * DT
        ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
        r = mpc.solve(x, u, ref, lane, t, lambda: np.array([-model.max_decel_mps2, 0.0]))
        assert np.all(np.isfinite(r.command)) and np.all(r.command >= lo) and np.all(
            r.command <= hi)
        u = r.command
        for _ in range(10):
            x = np.array(rk4(model.f, x.tolist(), u.tolist(), 0.01))
        results.append(r)
        errors.append(math.hypot(x[0] - 4.0 * (t + DT), x[1]))
    return results, errors


@pytest.mark.parametrize("solver", ["fatrop", "ipopt"])
def test_a_car_tracks_a_straight_lane_inside_its_corridor(solver):
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()), MpcSettings(solver=solver, jit=False,
                                                                       budget_s=5.0))
    results, errors = drive(mpc, 120)
    assert all(not r.fallback for r in results)
    assert math.sqrt(np.mean(np.square(errors[80:]))) < 0.1  # m, once caught up (from rest)
    for r in results:  # every predicted state inside the lane (slack ~ 0)
        assert r.max_slack_m < 1e-3 and np.all(np.abs(r.predicted[:, 1]) <= 2.0 + 1e-3)


def test_a_failed_solve_falls_back_to_the_shifted_plan_then_the_safe_command():
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()), MpcSettings(budget_s=5.0, jit=False))
    drive(mpc, 5)  # a good plan first
    starved = PathTrackingMpc(mpc.vehicle, MpcSettings(max_iter=1, budget_s=5.0, jit=False))
    starved.fallbacks.plan = mpc.fallbacks.plan  # as if the same controller
    when = mpc.fallbacks.plan[0]
    x = np.array([2.0, 1.0, 0.0, 4.0])
    ts = np.arange(N + 1) * DT
    ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
    r = starved.solve(x, np.zeros(2), ref, LANE, when + DT, lambda: np.array([-6.0, 0.0]))
    assert r.fallback == "shifted" and starved.counters["shifted"] == 1
    r = starved.solve(x, np.zeros(2), ref, LANE, when + 100.0, lambda: np.array([-6.0, 0.0]))
    assert r.fallback == "safe" and r.command.tolist() == [-6.0, 0.0]
    assert starved.counters["failed"] == 2 and starved.counters["safe"] == 1


def test_a_solve_that_does_not_return_is_ended_and_the_next_solve_has_a_fresh_process():
    """A solve taken for hung (here: every call, with an impossible hang_after_s) is ended
    with its process; the other guesses hang too, and the safe command goes out. The next
    solve runs in a new process (the process itself: test_solver_process.py)."""
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()),
                          MpcSettings(budget_s=5.0, jit=False, hang_after_s=1e-6))
    first = mpc.process.pid
    x = np.array([2.0, 1.0, 0.0, 4.0])
    ts = np.arange(N + 1) * DT
    ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
    r = mpc.solve(x, np.zeros(2), ref, LANE, 0.0, lambda: np.array([-6.0, 0.0]))
    assert r.status.startswith("hung") and r.fallback == "safe"
    assert r.command.tolist() == [-6.0, 0.0]
    assert mpc.counters["hung"] == 2 and mpc.counters["recovered"] == 0  # cold, then still
    assert mpc.process.pid != first
    assert mpc.last_hung["z0"].tolist() == [2.0, 1.0, 0.0, 4.0, 0.0, 0.0]
    mpc.settings = replace(mpc.settings, hang_after_s=60.0)
    r = mpc.solve(x, np.zeros(2), ref, LANE, 0.1, lambda: np.array([-6.0, 0.0]))
    assert not r.fallback and mpc.counters["failed"] == 1


def test_a_real_fatrop_hang_is_ended_and_the_step_solved_from_a_cold_start():
    """Inputs saved from a soak run (an Otter holding at its goal against a 0.08 m/s
    current): from this warm guess fatrop's restoration phase never returns. The solve is
    ended after hang_after_s and the step solved at once from a cold start."""
    saved = np.load(DATA / "otter-fatrop-hang.npz")
    model = make_model("vessel", {"hull": "otter", "current_enu_mps": [0.0, 0.08]})
    mpc = PathTrackingMpc(vehicle_model("vessel", model),
                          default_settings("vessel", jit=False, budget_s=NO_BUDGET_S,
                                           hang_after_s=2.0))
    args = [saved[k] for k in ("z0", "reference", "tangents", "corridor_A", "corridor_b")]
    with pytest.raises(SolverTimeout):  # the hang itself, for the record
        mpc.process.call([*args, saved["guess"]], timeout_s=2.0)
    # The previous solution that the warm start shifts into exactly the saved guess.
    nz, nw = mpc._layout
    stage, horizon = nz + nw + 1, mpc.settings.horizon
    stages = saved["guess"][:horizon * stage].reshape(horizon, stage)
    mpc._guess = np.concatenate([stages[0], stages[:-1].ravel(), saved["guess"][-nz:]])
    z0, rows = saved["z0"], mpc.settings.corridor_rows
    corridor = [(saved["corridor_A"][k * rows:(k + 1) * rows],
                 saved["corridor_b"][k * rows:(k + 1) * rows]) for k in range(horizon)]
    r = mpc.solve(z0[:6], z0[6:], saved["reference"], corridor, 0.0, lambda: np.zeros(2))
    assert mpc.counters["hung"] == 1 and mpc.counters["recovered"] == 1
    assert not r.fallback and r.iterations > 0 and np.all(np.isfinite(r.command))


def test_a_ship_failing_one_period_after_a_good_solve_keeps_to_its_plan():
    vehicle = vehicle_model("vessel", make_model("vessel"))
    good = PathTrackingMpc(vehicle, settings("vessel"))
    starved = PathTrackingMpc(vehicle, settings("vessel", max_iter=1))
    n, dt = good.settings.horizon, good.settings.dt
    assert dt > PERIOD_S
    x = np.array([0.0, 0.5, 0.0, 0.5, 0.0, 0.0])
    ts = np.arange(n + 1) * dt
    ref = np.vstack([0.5 * ts, 0 * ts, 0.5 + 0 * ts])
    lane = LANE[:1] * n
    assert not good.solve(x, np.zeros(2), ref, lane, 0.0, lambda: np.zeros(2)).fallback
    starved.fallbacks.plan = good.fallbacks.plan
    assert starved.solve(x, np.zeros(2), ref, lane, PERIOD_S,
                         lambda: np.zeros(2)).fallback == "shifted"


@pytest.mark.parametrize("kind", KINDS)
def test_an_iteration_cap_gives_the_safe_command_every_step(kind):
    """One iteration never converges, and with no plan yet every step is the safe
    command: the vehicle stays at rest where it started."""
    straight_path = straight(kind)
    flight = fly(kind, straight_path.reference(kind), 2.0, max_iter=1)
    counters = flight.controller.mpc.counters
    steps = len(flight.trace.results)
    assert counters["solves"] == counters["failed"] == counters["safe"] == steps == 20
    assert all(r.fallback == "safe" and math.isnan(r.max_slack_m) for r in flight.trace.results)
    assert_commands_valid(flight.trace.results, flight.vehicle.model)
    start = initial_state(kind, flight.vehicle.model, {"z": ALTITUDE_M})
    safe = SimVehicle("s", kind, flight.vehicle.model, start).safe_command()
    assert all(np.array_equal(r.command, safe) for r in flight.trace.results)
    assert np.allclose(flight.vehicle.state, start, atol=1e-9)


def test_a_solve_over_its_time_budget_is_not_used():
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()), MpcSettings(budget_s=0.0, jit=False))
    x = np.array([0.0, 1.0, 0.0, 0.0])
    ts = np.arange(N + 1) * DT
    ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
    r = mpc.solve(x, np.zeros(2), ref, LANE, 0.0, lambda: np.array([-6.0, 0.0]))
    assert r.fallback == "safe" and r.status.startswith("overrun")
    assert r.command.tolist() == [-6.0, 0.0]
    assert mpc.counters["overrun"] == mpc.counters["failed"] == mpc.counters["safe"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_usable_state_or_path_the_controller_holds(kind):
    model = make_model(kind)
    controller = PathController(kind, model, settings(kind))
    vehicle = SimVehicle("v", kind, model, initial_state(kind, model, {"z": ALTITUDE_M}))
    r = controller.step(0.0, vehicle.state, vehicle.applied, vehicle.safe_command)
    assert r.fallback == "safe" and r.status == "no path"

    controller.follow(straight(kind).reference(kind), BAND_M)
    state = vehicle.state.copy()
    state[0] = np.nan
    r = controller.step(0.1, state, vehicle.applied, vehicle.safe_command)
    assert r.fallback == "safe" and r.status == "state not finite"
    assert np.array_equal(r.command, vehicle.safe_command())
    # A safe command that is itself not finite is replaced by the steady input.
    nan = np.full(len(vehicle.safe_command()), np.nan)
    r = controller.step(0.2, state, vehicle.applied, lambda: nan)
    assert np.array_equal(r.command, np.asarray(controller.mpc.vehicle.u_ref))
    assert controller.mpc.counters["held"] == 3 and controller.mpc.counters["solves"] == 0
    # With its state back, it solves again.
    r = controller.step(0.3, vehicle.state, vehicle.applied, vehicle.safe_command)
    assert not r.fallback and np.all(np.isfinite(r.command))


def test_a_corridor_that_does_not_fit_the_problem_is_refused():
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()), MpcSettings(jit=False))
    x, ref = np.zeros(4), np.zeros((3, N + 1))
    with pytest.raises(ValueError, match="need 20 stages"):
        mpc.solve(x, np.zeros(2), ref, LANE[:5], 0.0, lambda: np.zeros(2))
    nine = (np.tile([[1.0, 0.0]], (9, 1)), np.ones(9))
    with pytest.raises(ValueError, match="corridor stage 3"):
        mpc.solve(x, np.zeros(2), ref, [*LANE[:3], nine, *LANE[4:]], 0.0, lambda: np.zeros(2))


# -- the compiled solver ------------------------------------------------------------------


KEY_SCRIPT = """
import types
from fleetbus.control.mpc import MpcSettings, PathTrackingMpc, vehicle_model
from fleetbus.models import Bicycle, Quadrotor
for kind, model in (("car", Bicycle()), ("quadrotor", Quadrotor())):
    problem = types.SimpleNamespace(vehicle=vehicle_model(kind, model),
                                    settings=MpcSettings(horizon=10))
    print(PathTrackingMpc._cache_key(problem))
"""


def test_the_cache_key_is_the_same_in_every_process():
    """The key names the problem, not this process: a function's repr (its address) in
    it made every controller start miss the cache and compile for 10-30 s."""
    keys = [subprocess.run([sys.executable, "-c", KEY_SCRIPT], capture_output=True,
                           text=True, check=True, timeout=120).stdout.split()
            for _ in range(2)]
    assert len(keys[0]) == 2 and keys[0][0] != keys[0][1]
    assert keys[0] == keys[1]


BUILD_SCRIPT = """
import sys, time
import casadi as ca
from fleetbus.control.compiled import build_once

def build():
    with open(sys.argv[1], "a") as marker:
        marker.write("built\\n")
    time.sleep(1.0)  # a compile's while: the other process asks meanwhile
    x = ca.SX.sym("x")
    return ca.Function("twice", [x], [2 * x])

path = build_once("test", "same-problem", build)
print(float(ca.Function.load(str(path))(3)), path.name)
"""


def test_processes_starting_the_same_problem_at_once_build_it_once(tmp_path):
    """A fleet's five drones and ships started on a fresh machine compiled two problems
    five times at once: the second process now waits for the first's build and loads it."""
    marker = tmp_path / "builds"
    env = os.environ | {"FLEETBUS_CACHE_DIR": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(marker)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert outputs == [["6.0", "same-problem.casadi"]] * 2
    assert marker.read_text().splitlines() == ["built"]


@pytest.mark.skipif(not compiler_available(), reason="no C compiler")
def test_the_compiled_controller_is_cached_and_agrees_with_the_uncompiled_one(
        tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETBUS_CACHE_DIR", str(tmp_path))
    vehicle = vehicle_model("car", Bicycle())
    compiled = MpcSettings(horizon=10, budget_s=NO_BUDGET_S, jit=True)
    first = PathTrackingMpc(vehicle, compiled)
    assert first.compiled
    cached = list((tmp_path / "mpc").glob("*.casadi"))
    assert len(cached) == 1
    before = cached[0].stat()

    second = PathTrackingMpc(vehicle, compiled)  # loaded, not compiled again
    after = cached[0].stat()
    assert after.st_ino == before.st_ino  # a new build would have replaced the file
    assert list((tmp_path / "mpc").glob("*.casadi")) == cached

    plain = PathTrackingMpc(vehicle, replace(compiled, jit=False))
    assert not plain.compiled
    runs = [drive(mpc, 30)[0] for mpc in (first, second, plain)]
    for a, b, c in zip(*runs, strict=True):
        assert not (a.fallback or b.fallback or c.fallback)
        assert np.array_equal(a.command, b.command)
        assert np.allclose(a.command, c.command, rtol=0, atol=1e-6)


def test_a_build_removes_cache_entries_unused_for_a_month(tmp_path, monkeypatch):
    """Every changed model, setting or CasADi version makes a new entry (20-25 MiB for a
    compiled MPC): those no process has loaded for UNUSED_DAYS go at the next build."""
    monkeypatch.setenv("FLEETBUS_CACHE_DIR", str(tmp_path))
    x = ca.SX.sym("x")

    def build() -> ca.Function:
        return ca.Function("twice", [x], [2 * x])

    old, recent = (build_once("test", key, build) for key in ("old", "recent"))
    month_ago = time.time() - (UNUSED_DAYS + 1) * 86400
    for path in (old, recent):
        os.utime(path, (month_ago, month_ago))
    assert build_once("test", "recent", build) == recent  # loaded: in use again
    build_once("test", "new", build)  # a build prunes
    assert sorted(p.name for p in (tmp_path / "test").glob("*.casadi")) == [
        "new.casadi", "recent.casadi"]
    assert not lock_file(old).exists()
