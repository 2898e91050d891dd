"""Per-step cost of each vehicle model (`python -m pytest benchmarks --benchmark-only`):
one RK4 step on lists of floats — what the simulator runs — against the same code on
numpy arrays (the floor: plain numpy) and as a CasADi Function evaluated numerically."""

from __future__ import annotations

import casadi as ca
import numpy as np
import pytest

from fleetbus.models import Bicycle, Quadrotor, Vessel, rk4

DT = 0.01
CASES = {
    "bicycle": (Bicycle(), [0, 0, 0, 5.0], [0.5, 0.1]),
    "quadrotor": (Quadrotor(), [0, 0, 10, 0, 0, 0, 1, 0, 0, 0], [14.7, 0.1, 0, 0]),
    "vessel": (Vessel(current_enu_mps=(0.1, 0.0)), [0, 0, 0, 1.0, 0, 0], [8.0, 0.1]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_list_rk4_step(benchmark, name):
    model, x, u = CASES[name]
    benchmark.group = f"{name} RK4 step"
    out = benchmark(rk4, model.f, [float(v) for v in x], [float(v) for v in u], DT)
    assert out == rk4(model.f, np.array(x, float), np.array(u, float), DT).tolist()  # same bits


@pytest.mark.parametrize("name", sorted(CASES))
def test_numpy_rk4_step(benchmark, name):
    model, x, u = CASES[name]
    x, u = np.array(x, float), np.array(u, float)
    benchmark.group = f"{name} RK4 step"
    assert np.all(np.isfinite(benchmark(rk4, model.f, x, u, DT)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_casadi_function_rk4_step(benchmark, name):
    model, x, u = CASES[name]
    xs, us = ca.SX.sym("x", len(x)), ca.SX.sym("u", len(u))
    step = ca.Function("step", [xs, us], [rk4(model.f, xs, us, DT)])
    benchmark.group = f"{name} RK4 step"
    out = benchmark(step, np.array(x, float), np.array(u, float))
    np.testing.assert_allclose(np.asarray(out).ravel(),
                               rk4(model.f, np.array(x, float), np.array(u, float), DT))
