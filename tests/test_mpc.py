"""Path-tracking MPC on the real models, closed loop with the simulator's integrator
(the full issue-7 suite is still to come: circles, turns, corridors, every vehicle)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetbus.control.mpc import MpcSettings, PathTrackingMpc, vehicle_model
from fleetbus.models import Bicycle, rk4

N, DT = 20, 0.1
LANE = [(np.array([[0.0, 1.0], [0.0, -1.0]]), np.array([2.0, 2.0]))] * N  # |y| <= 2 m


def drive(mpc: PathTrackingMpc, steps: int, start_y: float = 1.0):
    model = mpc.vehicle.model
    x, u = np.array([0.0, start_y, 0.0, 0.0]), np.zeros(2)
    lo, hi = (np.asarray(b) for b in model.input_bounds)
    results, errors = [], []
    for step in range(steps):
        t = step * DT
        ts = t + np.arange(N + 1) * DT
        ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
        r = mpc.solve(x, u, ref, LANE, t, lambda: np.array([-model.max_decel_mps2, 0.0]))
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
    starved._plan = mpc._plan  # the last good plan, as if from the same controller
    when = mpc._plan[0]
    x = np.array([2.0, 1.0, 0.0, 4.0])
    ts = np.arange(N + 1) * DT
    ref = np.vstack([4.0 * ts, 0.0 * ts, 4.0 + 0.0 * ts])
    r = starved.solve(x, np.zeros(2), ref, LANE, when + DT, lambda: np.array([-6.0, 0.0]))
    assert r.fallback == "shifted" and starved.counters["shifted"] == 1
    r = starved.solve(x, np.zeros(2), ref, LANE, when + 100.0, lambda: np.array([-6.0, 0.0]))
    assert r.fallback == "safe" and r.command.tolist() == [-6.0, 0.0]
    assert starved.counters["failed"] == 2 and starved.counters["safe"] == 1
