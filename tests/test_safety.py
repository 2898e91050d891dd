"""Safe actions against the real vehicle models: hold, stop and steer to a point, always
finite and inside the limits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetbus.control import safe_command
from fleetbus.estimation import Estimate
from fleetbus.estimation.drone import rotation
from fleetbus.models import rk4
from fleetbus.sim_bridge.vehicles import make_model

STARTS = {"quadrotor": [0, 0, 10, 3, 0, 0, 1, 0, 0, 0], "car": [0, 0, 0, 5.0],
          "vessel": [0, 0, 0, 1.0, 0, 0]}


def estimate_of(kind: str, x: np.ndarray) -> Estimate:
    """The true state as an estimate (what a perfect filter would say)."""
    if kind == "quadrotor":
        q = x[6:10]
        return Estimate(0.0, x[:3].copy(), q.copy(), rotation(q).T @ x[3:6], np.zeros(3),
                        np.eye(6), np.eye(6))
    q = np.array([math.cos(x[2] / 2), 0, 0, math.sin(x[2] / 2)])
    body = [x[3], 0.0, 0.0] if kind == "car" else [x[3], x[4], 0.0]
    rate = 0.0 if kind == "car" else x[5]
    return Estimate(0.0, np.array([x[0], x[1], 0.0]), q, np.array(body),
                    np.array([0.0, 0.0, rate]), np.eye(6), np.eye(6))


def fly(kind: str, action: str, target, seconds: float = 60.0, hull: str | None = None):
    model = make_model(kind, {"hull": hull} if hull else None)
    lower, upper = (np.asarray(b) for b in model.input_bounds)
    x = np.array(STARTS[kind], float)
    for _ in range(round(seconds / 0.01)):
        u = safe_command(kind, model, estimate_of(kind, x), action, target)
        assert np.all(np.isfinite(u)) and np.all(u >= lower) and np.all(u <= upper)
        x = np.array(rk4(model.f, x.tolist(), u.tolist(), 0.01))
        if kind == "quadrotor":
            x[6:10] /= np.linalg.norm(x[6:10])
    return x


@pytest.mark.parametrize("kind, hull", [("quadrotor", None), ("car", None), ("vessel", None),
                                        ("vessel", "otter")])
def test_recover_reaches_the_target_and_stops_there(kind, hull):
    target = np.array([-20.0, 10.0, 10.0])
    x = fly(kind, "recover", target, hull=hull)
    assert math.dist(x[:2], target[:2]) < 1.5
    speed = np.linalg.norm(x[3:6]) if kind == "quadrotor" else abs(x[3])
    assert speed < 0.2


@pytest.mark.parametrize("kind", ["car", "vessel"])
def test_hold_stops_a_car_or_a_ship(kind):
    x = fly(kind, "hold", None, seconds=30.0)
    assert abs(x[3]) < 0.05


def test_a_drone_holds_a_point_and_lands_on_the_spot():
    x = fly("quadrotor", "hold", np.array([2.0, -1.0, 8.0]), seconds=20.0)
    assert math.dist(x[:3], (2.0, -1.0, 8.0)) < 0.2
    x = fly("quadrotor", "land", np.array([0.0, 0.0, 0.0]), seconds=30.0)
    assert x[2] < 0.5 and math.dist(x[:2], (0.0, 0.0)) < 0.5


def test_a_nan_estimate_gives_a_neutral_command_never_a_nan():
    model = make_model("quadrotor")
    est = estimate_of("quadrotor", np.array(STARTS["quadrotor"], float))
    est.position[:] = np.nan
    u = safe_command("quadrotor", model, est, "hold", None)
    assert u.tolist() == [model.hover_thrust_n, 0.0, 0.0, 0.0]


def test_a_car_holding_brakes_in_proportion_to_a_small_speed():
    """A car at rest whose estimate reads a little forward speed gets a gentle brake, not
    full braking: with an estimate lagging a reversal, full braking had driven it
    backwards out of its fence."""
    model = make_model("car")
    creeping = safe_command("car", model, estimate_of("car", np.array([0.0, 0.0, 0.0, 0.06])),
                            "hold")
    assert -0.5 < creeping[0] < 0.0
    fast = safe_command("car", model, estimate_of("car", np.array([0.0, 0.0, 0.0, 8.0])),
                        "hold")
    assert fast[0] == -model.max_decel_mps2
