"""Car: planar pose, speed, yaw and yaw rate from GNSS, wheel speed, heading and the
IMU's yaw rate — filterpy's EKF over a constant turn rate and velocity model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from filterpy.kalman import ExtendedKalmanFilter

from fleetbus.estimation.engine import Measurement
from fleetbus.estimation.estimate import Estimate, planar_covariances, wrap, yaw_quaternion
from fleetbus.estimation.planar import YAW, PlanarFilter, X, Y

SPEED, RATE = 3, 4


class _CTRV(ExtendedKalmanFilter):
    """filterpy's EKF predicts x = F x, which is only right for linear models: here the
    state moves by the non-linear model and F (its Jacobian) moves the covariance."""

    dt = 0.0

    def predict_x(self, u: Any = 0) -> None:
        x, dt = self.x, self.dt
        mid = x[YAW] + x[RATE] * dt / 2  # the mean heading over the step
        x[X] += x[SPEED] * math.cos(mid) * dt
        x[Y] += x[SPEED] * math.sin(mid) * dt
        x[YAW] = wrap(x[YAW] + x[RATE] * dt)


class CarFilter(PlanarFilter):
    """State [x, y (ENU m), yaw (rad), speed (m/s), yaw rate (rad/s)]. The IMU enters as
    a yaw-rate measurement (its z gyro), not as a prediction driver."""

    observes = {"gnss": [X, Y], "heading": [YAW], "wheel_speed": [SPEED], "imu": [RATE]}
    navigation_states = [X, Y, YAW, SPEED]
    initial_variances = [4.0, 0.25]

    def __init__(self, accel_sigma_mps2: float = 0.5, yaw_accel_sigma_rps2: float = 0.2) -> None:
        self.accel_sigma = accel_sigma_mps2
        self.yaw_accel_sigma = yaw_accel_sigma_rps2
        self.kf = _CTRV(dim_x=5, dim_z=1)

    def predict(self, t: float) -> None:
        dt = t - self.time_s
        if dt <= 0:
            return
        ekf, x = self.kf, self.kf.x
        yaw, speed = x[YAW], x[SPEED]
        c, s = math.cos(yaw), math.sin(yaw)
        F = np.eye(5)
        F[X, YAW], F[X, SPEED] = -speed * s * dt, c * dt
        F[Y, YAW], F[Y, SPEED] = speed * c * dt, s * dt
        F[YAW, RATE] = dt
        # White acceleration and yaw acceleration, integrated over the step.
        a = np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        Q = np.zeros((5, 5))
        along = np.array([[c, 0.0], [s, 0.0], [0.0, 1.0]])  # (along-track, speed) -> x, y, v
        Q[np.ix_([X, Y, SPEED], [X, Y, SPEED])] = along @ a @ along.T * self.accel_sigma ** 2
        Q[np.ix_([YAW, RATE], [YAW, RATE])] = a * self.yaw_accel_sigma ** 2
        ekf.F, ekf.Q, ekf.dt = F, Q, dt
        ekf.predict()
        self.time_s = t

    def update(self, m: Measurement) -> tuple[np.ndarray, np.ndarray]:
        rows, z, R = self.select(m)
        H = np.zeros((len(rows), 5))
        H[range(len(rows)), rows] = 1.0
        angle = m.sensor == "heading"
        ekf = self.kf
        ekf.dim_z = len(rows)
        ekf.update(z, lambda x: H, lambda x: x[rows], R=R,
                   residual=(lambda a, b: wrap(a - b)) if angle else np.subtract)
        ekf.x[YAW] = wrap(ekf.x[YAW])
        return np.asarray(ekf.y, float).ravel(), ekf.S

    def estimate(self) -> Estimate:
        x = self.kf.x
        pose, twist = planar_covariances(self.kf.P, [X, Y], YAW, [SPEED], RATE)
        return Estimate(self.time_s, np.array([x[X], x[Y], 0.0]), yaw_quaternion(x[YAW]),
                        np.array([x[SPEED], 0.0, 0.0]), np.array([0.0, 0.0, x[RATE]]),
                        pose, twist)
