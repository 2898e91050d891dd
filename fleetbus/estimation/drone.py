"""Drone: an error-state Kalman filter driven by the IMU, corrected by GNSS, barometric
altitude and heading.

The nominal state (position, velocity, attitude quaternion, accelerometer and gyro
biases) is integrated from every IMU sample; filterpy's linear KalmanFilter carries the
15 error states [dp, dv, dtheta, dba, dbg] and their covariance, and each correction is
folded into the nominal state and the error reset to zero. The attitude error lives in
three angles, so the quaternion never has to be forced back onto the unit sphere by a
filter that does not know it is one (what a plain EKF over q would do).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from filterpy.kalman import KalmanFilter

from fleetbus.estimation.engine import Measurement
from fleetbus.estimation.estimate import Estimate, reset_rows, wrap

GRAVITY = np.array([0.0, 0.0, -9.81])  # ENU: what a body at rest must cancel
P_, V_, TH, BA, BG = (slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12), slice(12, 15))


def rotation(q: np.ndarray) -> np.ndarray:
    """Body → world rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotate_by(q: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """q followed by a body-frame rotation of `angle` (rad, axis times angle)."""
    theta = float(np.linalg.norm(angle))
    if theta < 1e-12:
        dq = np.array([1.0, *(angle / 2)])
    else:
        dq = np.array([math.cos(theta / 2), *(math.sin(theta / 2) * angle / theta)])
    w1, x1, y1, z1 = q
    w2, x2, y2, z2 = dq
    out = np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                    w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                    w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                    w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])
    return out / np.linalg.norm(out)


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def euler_quaternion(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return np.array([cr * cp * cy + sr * sp * sy, sr * cp * cy - cr * sp * sy,
                     cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy])


def yaw_of(q: np.ndarray) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


IMU_GAP_S = 0.05  # an IMU interval longer than this is a gap in the stream
GAP_ACCEL_MPS2 = 3.0  # what a vehicle may do unseen in a gap: acceleration, m/s^2
GAP_RATE_RPS = 0.1  # and attitude change, rad/s

class DroneFilter:
    """Noise figures are per IMU sample (white noise of each reading) and per square root
    of a second (bias random walks), as the simulator's IMU model states them. A sample's
    own covariance, when it comes with one, replaces the white-noise figures: an average of
    n samples (see ImuAverager) is n times less noisy over an n times longer step."""

    driver = "imu"

    def __init__(self, accel_noise_mps2: float = 0.05, gyro_noise_rps: float = 0.005,
                 accel_bias_walk: float = 1e-3, gyro_bias_walk: float = 1e-4,
                 initial_accel_bias_mps2: float = 0.005,
                 initial_gyro_bias_rps: float = 0.0005) -> None:
        self.noise = (accel_noise_mps2, gyro_noise_rps, accel_bias_walk, gyro_bias_walk)
        self.imu_var = np.array([accel_noise_mps2**2] * 3 + [gyro_noise_rps**2] * 3)
        self.initial_bias = (initial_accel_bias_mps2, initial_gyro_bias_rps)
        self.kf = KalmanFilter(dim_x=15, dim_z=3)
        self.p, self.v = np.zeros(3), np.zeros(3)
        self.q = np.array([1.0, 0.0, 0.0, 0.0])
        self.ba, self.bg = np.zeros(3), np.zeros(3)
        self.imu: np.ndarray | None = None  # the last sample (force, rate): held between
        self.time_s = -math.inf

    def initialise(self, latest: dict[str, Measurement]) -> bool:
        """From GNSS and heading, level from the IMU's gravity (the drone starts still)."""
        gnss, heading, imu = latest.get("gnss"), latest.get("heading"), latest.get("imu")
        if gnss is None or heading is None or imu is None:
            return False
        fx, fy, fz = imu.z[:3]
        roll, pitch = math.atan2(fy, fz), math.atan2(-fx, math.hypot(fy, fz))
        self.q = euler_quaternion(roll, pitch, heading.z[0])
        self.p, self.v = gnss.z[:3].copy(), np.zeros(3)
        if "baro" in latest:
            self.p[2] = latest["baro"].z[0]
        self.imu, self.time_s = imu.z.copy(), imu.stamp_s
        self.kf.x = np.zeros((15, 1))
        # Still at start: velocity near 0, and level to within one sample's noise over g
        # (a drone that starts moving should start its filter later).
        tilt = (self.noise[0] / 9.81) ** 2 + 0.002 ** 2
        self.kf.P = np.diag([*np.diag(gnss.R), 0.1, 0.1, 0.1, tilt, tilt,
                             heading.R[0, 0], *[self.initial_bias[0] ** 2] * 3,
                             *[self.initial_bias[1] ** 2] * 3])
        return True

    def drive(self, m: Measurement) -> None:
        """Integrate up to an IMU sample with that sample: the simulator's IMU reports the
        mean over the interval that ends at its stamp."""
        self.imu = m.z.copy()
        self.imu_var = np.diag(m.R).copy()
        self.predict(m.stamp_s)

    def predict(self, t: float) -> None:
        dt = t - self.time_s
        if dt <= 0 or self.imu is None:
            return
        if dt > IMU_GAP_S:
            # A gap in the IMU stream (a link loss): a held sample integrated over it
            # turns any rate into an attitude error, and the corrections afterwards were
            # read as sensor biases until the filter drifted off. Coast instead at
            # constant velocity, less sure of it, and integrate only the last interval.
            self._coast(t - IMU_GAP_S)
            dt = t - self.time_s
        force, omega = self.imu[:3] - self.ba, self.imu[3:] - self.bg
        R = rotation(self.q)
        accel = R @ force + GRAVITY
        self.p = self.p + self.v * dt + 0.5 * accel * dt * dt
        self.v = self.v + accel * dt
        self.q = rotate_by(self.q, omega * dt)
        F = np.eye(15)
        F[P_, V_] = np.eye(3) * dt
        F[V_, TH] = -R @ skew(force) * dt
        F[V_, BA] = -R * dt
        F[TH, TH] = np.eye(3) - skew(omega) * dt
        F[TH, BG] = -np.eye(3) * dt
        _, _, accel_walk, gyro_walk = self.noise
        Q = np.zeros(15)
        Q[V_] = self.imu_var[:3] * dt**2
        Q[TH] = self.imu_var[3:] * dt**2
        Q[BA] = accel_walk ** 2 * dt
        Q[BG] = gyro_walk ** 2 * dt
        self.kf.predict(F=F, Q=np.diag(Q))
        self.time_s = t

    def _coast(self, t: float) -> None:
        gap = t - self.time_s
        self.p = self.p + self.v * gap
        F = np.eye(15)
        F[P_, V_] = np.eye(3) * gap
        _, _, accel_walk, gyro_walk = self.noise
        Q = np.zeros(15)
        Q[V_] = (GAP_ACCEL_MPS2 * gap) ** 2
        Q[TH] = (GAP_RATE_RPS * gap) ** 2
        Q[BA] = accel_walk ** 2 * gap
        Q[BG] = gyro_walk ** 2 * gap
        self.kf.predict(F=F, Q=np.diag(Q))
        self.time_s = t

    def _observation(self, m: Measurement) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(innovation, H, R) of a GNSS, barometer or heading measurement."""
        H = np.zeros((len(m.z), 15))
        if m.sensor == "gnss":
            H[:, P_] = np.eye(3)
            return m.z - self.p, H, m.R
        if m.sensor == "baro":
            H[0, 2] = 1.0
            return m.z - self.p[2], H, m.R
        if m.sensor == "heading":
            yaw = yaw_of(self.q)
            for axis in range(3):  # yaw's sensitivity to each body-frame attitude error
                nudge = np.zeros(3)
                nudge[axis] = 1e-6
                H[0, 6 + axis] = wrap(yaw_of(rotate_by(self.q, nudge)) - yaw) / 1e-6
            return np.array([wrap(m.z[0] - yaw)]), H, m.R
        raise ValueError(f"the drone filter has no use for {m.sensor!r} measurements")

    def update(self, m: Measurement) -> tuple[np.ndarray, np.ndarray]:
        innovation, H, R = self._observation(m)
        kf = self.kf
        kf.update(innovation.reshape(-1, 1), R=R, H=H)
        dx = kf.x.ravel()
        self.p, self.v = self.p + dx[P_], self.v + dx[V_]
        self.q = rotate_by(self.q, dx[TH])
        self.ba, self.bg = self.ba + dx[BA], self.bg + dx[BG]
        kf.x = np.zeros((15, 1))
        return np.asarray(kf.y, float).ravel(), kf.S

    def reset_from(self, m: Measurement) -> None:
        if m.sensor == "gnss":
            self.p = m.z.copy()
            reset_rows(self.kf.P, [0, 1, 2], m.R)
        elif m.sensor == "baro":
            self.p[2] = m.z[0]
            reset_rows(self.kf.P, [2], m.R)
        elif m.sensor == "heading":
            self.q = rotate_by(self.q, np.array([0.0, 0.0, wrap(m.z[0] - yaw_of(self.q))]))
            reset_rows(self.kf.P, [8], m.R)

    def save(self) -> Any:
        return (self.p.copy(), self.v.copy(), self.q.copy(), self.ba.copy(), self.bg.copy(),
                None if self.imu is None else self.imu.copy(), self.imu_var.copy(),
                self.kf.P.copy(), self.time_s)

    def load(self, state: Any) -> None:
        p, v, q, ba, bg, imu, imu_var, P, self.time_s = state
        self.p, self.v, self.q, self.ba, self.bg, self.imu_var = (
            a.copy() for a in (p, v, q, ba, bg, imu_var))
        self.imu = None if imu is None else imu.copy()
        self.kf.P = P.copy()

    def navigation(self) -> tuple[np.ndarray, np.ndarray]:
        """[position (3), velocity (3)] in ENU and their covariance."""
        return np.concatenate([self.p, self.v]), self.kf.P[:6, :6].copy()

    def estimate(self) -> Estimate:
        R = rotation(self.q)
        rate = (self.imu[3:] - self.bg) if self.imu is not None else np.zeros(3)
        pose = np.zeros((6, 6))
        pose[:3, :3] = self.kf.P[P_, P_]
        pose[3:, 3:] = self.kf.P[TH, TH]  # small body-frame angles: roll, pitch, yaw near level
        twist = np.zeros((6, 6))
        twist[:3, :3] = R.T @ self.kf.P[V_, V_] @ R
        twist[3:, 3:] = self.kf.P[BG, BG] + np.eye(3) * self.noise[1] ** 2
        return Estimate(self.time_s, self.p.copy(), self.q.copy(), R.T @ self.v, rate, pose,
                        twist)
