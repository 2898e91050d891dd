"""Sensor models with seeded noise: the same seed gives the same readings, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymap3d

from fleetbus.models.quadrotor import GRAVITY
from fleetbus.sim_bridge.vehicles import SimVehicle


def body_motion(vehicle: SimVehicle, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(specific force, angular rate) in the body frame (FLU): what a perfect IMU reads.
    At rest on level ground the specific force is (0, 0, +g)."""
    x = vehicle.state
    if vehicle.kind == "quadrotor":
        accel_world = vehicle.model.f(x, u)[3:6] + np.array([0.0, 0.0, GRAVITY])
        qw, qx, qy, qz = x[6:10]
        rotation = np.array([  # body → world
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)],
            [2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)],
            [2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)],
        ])
        return rotation.T @ accel_world, np.asarray(u[1:4], float)
    rates = vehicle.model.f(x, u)
    if vehicle.kind == "car":
        speed, yaw_rate = x[3], rates[2]
        return np.array([rates[3], speed * yaw_rate, GRAVITY]), np.array([0.0, 0.0, yaw_rate])
    su, sv, r = x[3], x[4], x[5]  # vessel: body acceleration is dnu/dt + w x nu
    return (np.array([rates[3] - r * sv, rates[4] + r * su, GRAVITY]),
            np.array([0.0, 0.0, r]))


@dataclass
class ImuModel:
    gyro_noise_rps: float = 0.005
    accel_noise_mps2: float = 0.05
    gyro_bias_walk: float = 1e-4  # rad/s per √s
    accel_bias_walk: float = 1e-3  # m/s² per √s

    def __post_init__(self) -> None:
        self.gyro_bias = np.zeros(3)
        self.accel_bias = np.zeros(3)

    def measure(self, vehicle: SimVehicle, u: np.ndarray, dt: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        force, rate = body_motion(vehicle, u)
        noise = rng.standard_normal(12)  # one draw: the IMU runs at the physics rate
        root_dt = np.sqrt(dt)
        self.gyro_bias += noise[0:3] * (self.gyro_bias_walk * root_dt)
        self.accel_bias += noise[3:6] * (self.accel_bias_walk * root_dt)
        return (force + self.accel_bias + noise[6:9] * self.accel_noise_mps2,
                rate + self.gyro_bias + noise[9:12] * self.gyro_noise_rps)


@dataclass
class GnssModel:
    origin_lat_deg: float = 59.9
    origin_lon_deg: float = 10.7
    origin_alt_m: float = 0.0
    horizontal_sigma_m: float = 1.0
    vertical_sigma_m: float = 2.0

    def measure(self, vehicle: SimVehicle,
                rng: np.random.Generator) -> tuple[float, float, float]:
        """(latitude °, longitude °, altitude m) of the noisy position."""
        x = vehicle.state
        up = x[2] if vehicle.kind == "quadrotor" else 0.0
        e, n = x[:2] + rng.normal(0.0, self.horizontal_sigma_m, 2)
        u = up + rng.normal(0.0, self.vertical_sigma_m)
        lat, lon, alt = pymap3d.enu2geodetic(e, n, u, self.origin_lat_deg,
                                             self.origin_lon_deg, self.origin_alt_m)
        return float(lat), float(lon), float(alt)


@dataclass
class ScalarNoise:
    """A reading with white noise: heading, barometric altitude, wheel speed, speed log."""

    sigma: float

    def measure(self, true_value: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(true_value) + rng.normal(0.0, self.sigma, np.shape(true_value))


def true_yaw(vehicle: SimVehicle) -> float:
    """ENU yaw (0 = east, counter-clockwise positive)."""
    x = vehicle.state
    if vehicle.kind == "quadrotor":
        qw, qx, qy, qz = x[6:10]
        return float(np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz)))
    return float(x[2])
