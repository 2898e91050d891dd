"""Sensor models with seeded noise: the same seed gives the same readings, bit for bit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleetbus.models.quadrotor import GRAVITY
from fleetbus.sim_bridge.frames import geodetic
from fleetbus.sim_bridge.vehicles import SimVehicle


def body_motion(vehicle: SimVehicle) -> tuple[list[float], list[float]]:
    """(specific force, angular rate) in the body frame (FLU) over the last physics step:
    what a perfect IMU integrates. At rest on level ground the specific force is (0, 0, +g).
    Plain floats: this runs for every vehicle at the IMU rate."""
    x, rates = vehicle.state.tolist(), vehicle.rate.tolist()
    if vehicle.kind == "quadrotor":
        ax, ay, az = rates[3], rates[4], rates[5] + GRAVITY  # world frame
        qw, qx, qy, qz = x[6:10]
        # the transpose of the body → world rotation, applied to the world acceleration
        return ([(1 - 2 * (qy * qy + qz * qz)) * ax + 2 * (qx * qy + qw * qz) * ay
                 + 2 * (qx * qz - qw * qy) * az,
                 2 * (qx * qy - qw * qz) * ax + (1 - 2 * (qx * qx + qz * qz)) * ay
                 + 2 * (qy * qz + qw * qx) * az,
                 2 * (qx * qz + qw * qy) * ax + 2 * (qy * qz - qw * qx) * ay
                 + (1 - 2 * (qx * qx + qy * qy)) * az],
                # the rate model takes its body rates as inputs; the rotor-level one
                # (the HIL adapters') integrates them as states
                x[10:13] if len(x) > 10 else vehicle.applied[1:4].tolist())
    if vehicle.kind == "car":
        speed, yaw_rate = x[3], rates[2]
        return [rates[3], speed * yaw_rate, GRAVITY], [0.0, 0.0, yaw_rate]
    su, sv, r = x[3], x[4], x[5]  # vessel: body acceleration is dnu/dt + w x nu
    return [rates[3] - r * sv, rates[4] + r * su, GRAVITY], [0.0, 0.0, r]


@dataclass
class ImuModel:
    gyro_noise_rps: float = 0.005
    accel_noise_mps2: float = 0.05
    gyro_bias_walk: float = 1e-4  # rad/s per √s
    accel_bias_walk: float = 1e-3  # m/s² per √s

    def __post_init__(self) -> None:
        self.gyro_bias = [0.0, 0.0, 0.0]
        self.accel_bias = [0.0, 0.0, 0.0]

    def measure(self, vehicle: SimVehicle, dt: float, rng: np.random.Generator) -> list[float]:
        """[force x, y, z, rate x, y, z] with noise and biases that walked for `dt`."""
        force, rate = body_motion(vehicle)
        n = rng.standard_normal(12).tolist()  # one draw: the IMU runs at the physics rate
        gyro_walk, accel_walk = self.gyro_bias_walk * dt ** 0.5, self.accel_bias_walk * dt ** 0.5
        gb = self.gyro_bias = [b + w * gyro_walk for b, w in zip(self.gyro_bias, n[0:3],
                                                                 strict=True)]
        ab = self.accel_bias = [b + w * accel_walk for b, w in zip(self.accel_bias, n[3:6],
                                                                   strict=True)]
        an, gn = self.accel_noise_mps2, self.gyro_noise_rps
        return ([f + b + w * an for f, b, w in zip(force, ab, n[6:9], strict=True)]
                + [g + b + w * gn for g, b, w in zip(rate, gb, n[9:12], strict=True)])


@dataclass
class GnssModel:
    origin_lat_deg: float = 59.9
    origin_lon_deg: float = 10.7
    origin_alt_m: float = 0.0
    horizontal_sigma_m: float = 1.0
    vertical_sigma_m: float = 2.0

    def measure(self, vehicle: SimVehicle, rng: np.random.Generator) -> list[float]:
        """[east, north, up] (m) of the noisy position: faults apply in metres."""
        x = vehicle.state
        up = x[2] if vehicle.kind == "quadrotor" else 0.0
        noise = rng.normal(0.0, 1.0, 3) * (self.horizontal_sigma_m, self.horizontal_sigma_m,
                                           self.vertical_sigma_m)
        return [x[0] + noise[0], x[1] + noise[1], up + noise[2]]

    def geodetic(self, enu: list[float]) -> tuple[float, float, float]:
        """(latitude °, longitude °, altitude m MSL) of a local ENU position."""
        return geodetic(enu, (self.origin_lat_deg, self.origin_lon_deg, self.origin_alt_m))


@dataclass
class ScalarNoise:
    """A reading with white noise: heading, barometric altitude, wheel speed, speed log."""

    sigma: float

    def measure(self, true_value: float | np.ndarray, rng: np.random.Generator) -> list[float]:
        return (np.atleast_1d(true_value) + rng.normal(0.0, self.sigma,
                                                       np.size(true_value))).tolist()


def true_yaw(vehicle: SimVehicle) -> float:
    """ENU yaw (0 = east, counter-clockwise positive)."""
    x = vehicle.state
    if vehicle.kind == "quadrotor":
        qw, qx, qy, qz = x[6:10]
        return float(np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz)))
    return float(x[2])
