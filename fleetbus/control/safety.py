"""Safe actions with no optimiser in the loop: hold, stop or land, and steer to a point.

These are what a geofence guard sends when a zone's breach action fires, and what a
controller falls back to when its solver fails: small feedback laws that always return a
finite command inside the vehicle's limits, whatever the estimate says. Gains are
deliberately soft: they must be stable on every model's default parameters, not fast.

Commands come back in the model's input order (`input_bounds`): quadrotor
[thrust N, roll/pitch/yaw rate rad/s], vessel [surge force N, yaw moment N m], car
[acceleration m/s^2, steering rad].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fleetbus.estimation.drone import rotation
from fleetbus.estimation.estimate import Estimate, wrap
from fleetbus.models.quadrotor import GRAVITY

HOLD_TIME_CONSTANT_S = 0.5  # a car holding sheds its speed with this time constant

SafeAction = Literal["hold", "return", "land", "recover"]


@dataclass(frozen=True)
class SafetyGains:
    approach_speed_mps: float = 2.0  # speed when steering to a target (return, recover)
    position_gain: float = 0.8  # 1/s: desired velocity per metre of error
    velocity_gain: float = 1.5  # 1/s: desired acceleration per m/s of velocity error
    attitude_gain: float = 4.0  # 1/s: body rate per radian of tilt or heading error
    land_speed_mps: float = 0.5  # descent rate while landing


def safe_command(kind: str, model, estimate: Estimate, action: SafeAction,
                 target: np.ndarray | None = None,
                 gains: SafetyGains = SafetyGains()) -> np.ndarray:
    """The command that carries out `action` from `estimate`: "hold" keeps a drone or a
    ship at `target` (where it is when None) and stops a car, "land" descends over
    `target`'s x, y (a car or ship stops), "return"/"recover" go to `target` (ENU m) at
    the approach speed and stop there."""
    lower, upper = (np.asarray(b, float) for b in model.input_bounds)
    goal = estimate.position if target is None else np.asarray(target, float)
    if kind == "quadrotor":
        u = _quadrotor(model, estimate, action, goal, gains)
    elif kind == "car":
        u = _car(model, estimate, action, goal, gains)
    elif kind == "vessel":
        u = _vessel(model, estimate, action, goal, gains)
    else:
        raise ValueError(f"no safe action for vehicle type {kind!r}")
    if not np.all(np.isfinite(u)):  # a NaN estimate must not become a NaN command
        u = _neutral(kind, model)
    return np.clip(u, lower, upper)


def _neutral(kind: str, model) -> np.ndarray:
    if kind == "quadrotor":
        return np.array([model.hover_thrust_n, 0.0, 0.0, 0.0])
    return np.zeros(2)


def _velocity_towards(estimate: Estimate, goal: np.ndarray, gains: SafetyGains) -> np.ndarray:
    """Desired world velocity: proportional to the error, capped at the approach speed."""
    error = np.asarray(goal, float)[: len(estimate.position)] - estimate.position
    v = gains.position_gain * error
    speed = float(np.linalg.norm(v))
    return v if speed <= gains.approach_speed_mps else v * (gains.approach_speed_mps / speed)


def _quadrotor(model, est: Estimate, action: SafeAction, goal: np.ndarray,
               gains: SafetyGains) -> np.ndarray:
    R = rotation(est.orientation)
    v_world = R @ est.velocity_body
    v_des = _velocity_towards(est, goal, gains)
    if action == "land":
        v_des = np.array([v_des[0], v_des[1], -gains.land_speed_mps])
    a_des = gains.velocity_gain * (v_des - v_world) + np.array([0.0, 0.0, GRAVITY])
    a_des[2] = max(a_des[2], 0.3 * GRAVITY)  # never command the body upside down
    tilt_cap = math.radians(30.0)
    horizontal = math.hypot(a_des[0], a_des[1])
    if horizontal > a_des[2] * math.tan(tilt_cap):
        a_des[:2] *= a_des[2] * math.tan(tilt_cap) / horizontal
    z_des = a_des / np.linalg.norm(a_des)
    thrust = model.mass_kg * float(a_des @ R[:, 2])
    # Tilt error as a rotation vector in the body frame: rotate body z onto z_des.
    tilt = R.T @ np.cross(R[:, 2], z_des)
    yaw_rate = 0.0  # keep the heading: a guard has no reason to turn the drone
    rates = gains.attitude_gain * tilt
    return np.array([thrust, rates[0], rates[1], yaw_rate - 0.5 * est.angular_body[2]])


def _car(model, est: Estimate, action: SafeAction, goal: np.ndarray,
         gains: SafetyGains) -> np.ndarray:
    speed = float(est.velocity_body[0])
    error = goal[:2] - est.position[:2]
    distance = float(np.hypot(*error))
    if action in ("hold", "land") or distance < 0.5:
        # Brake in proportion to the speed, at most full braking. Full braking whenever
        # the estimate read a little forward speed (it was so) drove a car at rest
        # backwards: the estimate lags a reversal by a few tenths of a second, and it
        # kept reading "forward" while the brake accelerated the car in reverse.
        return np.array([min(max(-speed / HOLD_TIME_CONSTANT_S, -model.max_decel_mps2),
                             model.max_accel_mps2), 0.0])
    yaw = _yaw(est)
    bearing = wrap(math.atan2(error[1], error[0]) - yaw)
    # Pure pursuit towards the target (or reverse when it lies behind).
    forward = abs(bearing) <= math.pi / 2
    v_ref = min(gains.approach_speed_mps, gains.position_gain * distance)
    v_ref = v_ref if forward else -v_ref
    alpha = bearing if forward else wrap(bearing + math.pi)
    steer = math.atan2(2.0 * model.wheelbase_m * math.sin(alpha), max(distance, 1.0))
    return np.array([gains.velocity_gain * (v_ref - speed), steer if forward else -steer])


def _vessel(model, est: Estimate, action: SafeAction, goal: np.ndarray,
            gains: SafetyGains) -> np.ndarray:
    surge, rate = float(est.velocity_body[0]), float(est.angular_body[2])
    error = goal[:2] - est.position[:2]
    distance = float(np.hypot(*error))
    M = np.asarray(model.mass_matrix)  # rigid body plus added mass: what the forces move
    mass, inertia = float(M[0, 0]), float(M[2, 2])
    # Stopping is enough within a metre; further off (a current carries an idle hull
    # away: "stop" would let it drift on into the zone it was held back from) a ship
    # holding goes back to where it was told to hold, as a dynamic-positioning hold does.
    if action == "land" or distance < 1.0:
        return np.array([-gains.velocity_gain * mass * surge, -gains.attitude_gain * inertia
                         * rate])
    bearing = float(wrap(math.atan2(error[1], error[0]) - _yaw(est)))
    # Slow down while the bow points away from the target, so the turn stays tight.
    u_ref = min(gains.approach_speed_mps, gains.position_gain * distance) * max(
        math.cos(bearing), 0.0)
    return np.array([gains.velocity_gain * mass * (u_ref - surge),
                     inertia * (gains.attitude_gain * bearing - 2.0 * rate)])


def _yaw(est: Estimate) -> float:
    w, x, y, z = est.orientation
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
