"""Ship: planar pose, surge and sway through the water, yaw rate and the ocean current,
from GNSS, heading, the speed log and the IMU's yaw rate — filterpy's unscented Kalman
filter, which needs no Jacobians of the rotation between water and ground."""

from __future__ import annotations

import math

import numpy as np
from filterpy.kalman import MerweScaledSigmaPoints, UnscentedKalmanFilter

from fleetbus.estimation.engine import Measurement
from fleetbus.estimation.estimate import Estimate, planar_covariances, wrap, yaw_quaternion
from fleetbus.estimation.planar import YAW, PlanarFilter, X, Y

SURGE, SWAY, RATE, CX, CY = range(3, 8)


def _move(x: np.ndarray, dt: float) -> np.ndarray:
    """Constant body velocity and yaw rate; the current carries the hull over ground."""
    yaw = x[YAW] + x[RATE] * dt / 2
    c, s = math.cos(yaw), math.sin(yaw)
    out = x.copy()
    out[X] += (c * x[SURGE] - s * x[SWAY] + x[CX]) * dt
    out[Y] += (s * x[SURGE] + c * x[SWAY] + x[CY]) * dt
    out[YAW] = x[YAW] + x[RATE] * dt
    return out


def _residual_x(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    # filterpy calls this once per sigma point: float arithmetic, not numpy's wrap
    d[YAW] = (d[YAW] + math.pi) % math.tau - math.pi
    return d


def _residual_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    d[0] = (d[0] + math.pi) % math.tau - math.pi  # per sigma point, like _residual_x
    return d


def _mean_x(sigmas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """filterpy averages sigma points linearly: a yaw near ±pi would average to 0."""
    x = weights @ sigmas
    x[YAW] = math.atan2(weights @ np.sin(sigmas[:, YAW]), weights @ np.cos(sigmas[:, YAW]))
    return x


def _mean_angle(sigmas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.array([math.atan2(weights @ np.sin(sigmas[:, 0]), weights @ np.cos(sigmas[:, 0]))])


class ShipFilter(PlanarFilter):
    """State [x, y (ENU m), yaw (rad), surge, sway (m/s through the water), yaw rate
    (rad/s), current east, north (m/s)]."""

    observes = {"gnss": [X, Y], "heading": [YAW], "speed_log": [SURGE, SWAY]}
    navigation_states = [X, Y, YAW, SURGE, SWAY, RATE]
    initial_variances = [1.0, 0.25, 0.04, 0.25, 0.25]

    def __init__(self, accel_sigma_mps2: float = 0.07, yaw_accel_sigma_rps2: float = 0.03,
                 current_walk_mps: float = 0.002) -> None:
        self.sigmas = (accel_sigma_mps2, yaw_accel_sigma_rps2, current_walk_mps)
        # numpy's Cholesky: scipy's (filterpy's default) costs twice as much at 8x8
        points = MerweScaledSigmaPoints(8, alpha=0.1, beta=2.0, kappa=0.0,
                                        sqrt_method=lambda A: np.linalg.cholesky(A).T,
                                        subtract=_residual_x)
        self.kf = UnscentedKalmanFilter(8, 1, 0.0, hx=None, fx=_move, points=points,
                                        x_mean_fn=_mean_x, residual_x=_residual_x)

    def predict(self, t: float) -> None:
        """Always called before an update, even for dt = 0: filterpy's UKF updates from
        the sigma points of the last predict, which an earlier update made stale."""
        dt = max(0.0, t - self.time_s)
        if dt == 0.0:  # nothing moves: fresh sigma points are all an update needs
            self.kf.sigmas_f = self.kf.points_fn.sigma_points(self.kf.x, self.kf.P)
            return
        accel, yaw_accel, walk = self.sigmas
        a = np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        Q = np.zeros((8, 8))
        for pos, vel, sigma in ((X, SURGE, accel), (Y, SWAY, accel), (YAW, RATE, yaw_accel)):
            Q[np.ix_([pos, vel], [pos, vel])] = a * sigma ** 2
        Q[CX, CX] = Q[CY, CY] = walk ** 2 * dt
        self.kf.Q = Q
        self.kf.predict(dt=dt)
        self.time_s = max(t, self.time_s)

    def update(self, m: Measurement) -> tuple[np.ndarray, np.ndarray]:
        rows, z, R = self.select(m)
        angle = m.sensor == "heading"
        ukf = self.kf
        ukf.residual_z = _residual_angle if angle else np.subtract
        ukf.z_mean = _mean_angle if angle else None
        ukf._dim_z = len(rows)
        ukf.update(z, R=R, hx=lambda x: x[rows])
        ukf.x[YAW] = wrap(ukf.x[YAW])
        return np.asarray(ukf.y, float).ravel(), ukf.S

    def estimate(self) -> Estimate:
        x = self.kf.x
        c, s = math.cos(x[YAW]), math.sin(x[YAW])
        # over ground, in the body frame: through the water plus the current
        ground = [x[SURGE] + c * x[CX] + s * x[CY], x[SWAY] - s * x[CX] + c * x[CY], 0.0]
        pose, twist = planar_covariances(self.kf.P, [X, Y], YAW, [SURGE, SWAY], RATE)
        return Estimate(self.time_s, np.array([x[X], x[Y], 0.0]), yaw_quaternion(x[YAW]),
                        np.array(ground), np.array([0.0, 0.0, x[RATE]]), pose, twist)

