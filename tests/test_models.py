"""Vehicle models: one dynamics function for numpy and CasADi, and physical checks."""

from __future__ import annotations

import math

import casadi as ca
import numpy as np
import pytest

from fleetbus.models import Bicycle, Quadrotor, RotorQuadrotor, Vessel, rk4

MODELS = [Bicycle(), Bicycle(steer_time_constant_s=0.2), Quadrotor(drag_per_kg=0.1),
          RotorQuadrotor(), Vessel()]


def simulate(model, x0, u, seconds, dt=0.01):
    x = np.asarray(x0, dtype=float)
    trace = [x]
    for _ in range(round(seconds / dt)):
        x = rk4(model.f, x, np.asarray(u, dtype=float), dt)
        trace.append(x)
    return np.array(trace)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
def test_numpy_and_casadi_evaluate_the_same_dynamics(model):
    rng = np.random.default_rng(7)
    n, m = len(model.states), len(model.inputs)
    x_sym, u_sym = ca.SX.sym("x", n), ca.SX.sym("u", m)
    f_sym = ca.Function("f", [x_sym, u_sym], [model.f(x_sym, u_sym)])
    for _ in range(20):
        x, u = rng.normal(size=n), rng.normal(size=m)
        np.testing.assert_allclose(np.asarray(f_sym(x, u)).ravel(), model.f(x, u),
                                   rtol=1e-12, atol=1e-12)
    # RK4 over symbols is the discrete model an MPC uses
    step = ca.Function("step", [x_sym, u_sym], [rk4(model.f, x_sym, u_sym, 0.05)])
    x, u = rng.normal(size=n), rng.normal(size=m)
    np.testing.assert_allclose(np.asarray(step(x, u)).ravel(), rk4(model.f, x, u, 0.05),
                               rtol=1e-12, atol=1e-12)


def test_quadrotor_hovers_at_weight_and_climbs_above_it():
    quad = Quadrotor()
    level = [0, 0, 10, 0, 0, 0, 1, 0, 0, 0]
    hover = quad.f(np.array(level, float), np.array([quad.hover_thrust_n, 0, 0, 0]))
    np.testing.assert_allclose(hover, 0.0, atol=1e-12)
    assert quad.hover_thrust_n == pytest.approx(1.5 * 9.81)
    climb = quad.f(np.array(level, float), np.array([quad.hover_thrust_n * 1.2, 0, 0, 0]))
    assert climb[5] == pytest.approx(0.2 * 9.81)


def test_wind_carries_a_hovering_quadrotor_until_it_moves_with_the_air():
    quad = Quadrotor(drag_per_kg=0.5, wind_enu_mps=(3.0, 0.0, 0.0))
    trace = simulate(quad, [0, 0, 10, 0, 0, 0, 1, 0, 0, 0], [quad.hover_thrust_n, 0, 0, 0], 30.0)
    np.testing.assert_allclose(trace[-1, 3:6], [3.0, 0.0, 0.0], atol=1e-3)


def test_quadrotor_rolling_right_accelerates_right_and_keeps_a_unit_quaternion():
    quad = Quadrotor()
    trace = simulate(quad, [0, 0, 10, 0, 0, 0, 1, 0, 0, 0], [quad.hover_thrust_n, 0.5, 0, 0],
                     1.0)
    # positive roll rate about body x (forward) banks the thrust toward -y (right in FLU)
    assert trace[-1, 1] < -0.1
    np.testing.assert_allclose(np.linalg.norm(trace[:, 6:10], axis=1), 1.0, atol=1e-6)


LEVEL13 = [0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]


def test_rotor_quadrotor_hovers_with_a_quarter_of_the_weight_per_motor():
    quad = RotorQuadrotor()
    each = quad.mass_kg * 9.81 / 4
    np.testing.assert_allclose(quad.f(np.array(LEVEL13, float), np.full(4, each)), 0.0,
                               atol=1e-12)


@pytest.mark.parametrize("extra, axis, sign", [
    ([0, 1, 1, 0], 10, +1),  # left motors (2, 3) harder: roll to the right = +x rate (FLU)
    ([1, 0, 0, 1], 10, -1),  # right motors (1, 4)
    ([0, 1, 0, 1], 11, +1),  # rear motors (2, 4) harder: nose down = +y rate (FLU)
    ([0, 0, 1, 1], 12, +1),  # clockwise props (3, 4) harder: body yaws counter-clockwise
    ([1, 1, 0, 0], 12, -1),
])
def test_rotor_quadrotor_mixer_turns_the_way_px4_quad_x_does(extra, axis, sign):
    quad = RotorQuadrotor()
    u = np.full(4, quad.mass_kg * 9.81 / 4) + 0.5 * np.array(extra, float)
    rates = quad.f(np.array(LEVEL13, float), u)
    assert np.sign(rates[axis]) == sign
    others = [i for i in (10, 11, 12) if i != axis]
    np.testing.assert_allclose(rates[others], 0.0, atol=1e-12)


def test_bicycle_steady_turn_radius_is_wheelbase_over_tan_steer():
    car = Bicycle(wheelbase_m=2.7)
    steer = 0.3
    trace = simulate(car, [0, 0, 0, 5.0], [0.0, steer], 20.0)
    centre = np.array([0.0, car.turn_radius_m(steer)])  # to the left of the start
    radii = np.linalg.norm(trace[:, :2] - centre, axis=1)
    assert car.turn_radius_m(steer) == pytest.approx(2.7 / math.tan(0.3))
    np.testing.assert_allclose(radii, car.turn_radius_m(steer), rtol=1e-6)


def test_bicycle_steering_lag_delays_the_turn():
    lagged = simulate(Bicycle(steer_time_constant_s=0.5), [0, 0, 0, 5.0, 0.0], [0, 0.3], 0.5)
    direct = simulate(Bicycle(), [0, 0, 0, 5.0], [0, 0.3], 0.5)
    assert 0 < lagged[-1, 2] < direct[-1, 2]


def test_vessel_reaches_the_speed_where_damping_equals_thrust():
    ship = Vessel()
    trace = simulate(ship, [0, 0, 0, 0, 0, 0], [ship.max_surge_force_n, 0.0], 60.0)
    speed = trace[-1, 3]
    drag = -(ship.x_u + ship.x_uu * speed + ship.x_uuu * speed**2) * speed
    assert drag == pytest.approx(ship.max_surge_force_n, rel=1e-3)
    assert 0.8 < speed < 1.2  # about 1 m/s, as CyberShip II runs in its basin


def test_vessel_drifts_with_the_current():
    ship = Vessel(current_enu_mps=(0.0, 0.2))
    trace = simulate(ship, [0, 0, 0, 0, 0, 0], [0.0, 0.0], 10.0)
    np.testing.assert_allclose(trace[-1, :2], [0.0, 2.0], atol=1e-9)


def manoeuvres(ship: Vessel) -> dict[str, float]:
    """IMO MSC.137(76)-style runs with full yaw moment in place of full rudder."""
    dt = 0.02
    x = simulate(ship, [0, 0, 0, 0, 0, 0], [ship.max_surge_force_n, 0.0], 60.0)[-1]
    start = x[:2].copy()
    advance = tactical = None
    for _ in range(round(120 / dt)):  # turning circle, to port
        x = rk4(ship.f, x, np.array([ship.max_surge_force_n, ship.max_yaw_moment_nm]), dt)
        heading = x[2]
        if advance is None and heading >= math.pi / 2:
            advance = x[0] - start[0]
        if tactical is None and heading >= math.pi:
            tactical = x[1] - start[1]
            break
    x = simulate(ship, [0, 0, 0, 0, 0, 0], [ship.max_surge_force_n, 0.0], 60.0)[-1]
    ten = math.radians(10)
    moment, overshoot, switched, returned = ship.max_yaw_moment_nm, 0.0, False, False
    for _ in range(round(60 / dt)):  # 10°/10° zig-zag, first half-cycle
        x = rk4(ship.f, x, np.array([ship.max_surge_force_n, moment]), dt)
        if not switched and x[2] >= ten:
            moment, switched = -moment, True
        elif switched:
            overshoot = max(overshoot, x[2] - ten)
            if x[2] < ten:
                returned = True
                break
    return {"advance_L": advance / ship.length_m, "tactical_diameter_L": tactical / ship.length_m,
            "first_overshoot_deg": math.degrees(overshoot) if returned else math.inf}


def test_vessel_manoeuvres_against_imo_criteria():
    results = manoeuvres(Vessel())
    print("\nCyberShip II with full yaw moment:",
          f"advance {results['advance_L']:.2f} L (IMO <= 4.5 L),",
          f"tactical diameter {results['tactical_diameter_L']:.2f} L (IMO <= 5 L),",
          f"10/10 zig-zag first overshoot {results['first_overshoot_deg']:.1f} deg "
          "(IMO <= 10 deg when L/V < 10 s)")
    assert results["advance_L"] <= 4.5
    assert results["tactical_diameter_L"] <= 5.0
    # Known, and reported rather than hidden: with differential thrust alone (0.64 N·m)
    # the published hull enters a self-sustained turn — its Munk moment (X_udot - Y_vdot)
    # u v reaches about 2.6 N·m — so the zig-zag never comes back. The rudders of the
    # real vessel are the missing yaw authority (issue 4 continues).
    assert results["first_overshoot_deg"] == math.inf


@pytest.mark.parametrize("make, field", [
    (lambda: Quadrotor(mass_kg=-1), "mass_kg"),
    (lambda: Quadrotor(max_thrust_n=5.0), "cannot lift"),
    (lambda: Vessel(mass_kg=0), "mass_kg"),
    (lambda: Vessel(y_vdot=40.0), "positive definite"),
    (lambda: Bicycle(wheelbase_m=0), "wheelbase_m"),
])
def test_impossible_parameters_are_refused_by_name(make, field):
    with pytest.raises(ValueError, match=field):
        make()
