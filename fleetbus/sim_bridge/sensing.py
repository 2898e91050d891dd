"""The sensor suite of a simulated vehicle: which sensors it has, how often each samples,
how to read it (a list of floats, what faults act on) and the noise it reports. Pure
library: the simulator node turns readings into messages, and the estimator tests feed
them to the filters directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import numpy as np

from fleetbus.sim_bridge.sensors import GnssModel, ImuModel, ScalarNoise, true_yaw
from fleetbus.sim_bridge.vehicles import SimVehicle

SENSORS: dict[str, dict[str, int]] = {  # vehicle type -> sensor -> components
    "quadrotor": {"imu": 6, "gnss": 3, "heading": 1, "baro": 1},
    "vessel": {"imu": 6, "gnss": 3, "heading": 1, "speed_log": 2},
    "car": {"imu": 6, "gnss": 3, "heading": 1, "wheel_speed": 1},
}


@dataclass(frozen=True)
class SensorSettings:
    """Shared by every vehicle of a simulation (the simulator node's parameters)."""

    imu_rate_hz: float = 100.0
    gnss_rate_hz: float = 5.0
    gnss_latency_s: float = 0.1  # age of a fix when it is published
    aux_rate_hz: float = 10.0  # heading, barometer, wheel speed and speed log
    heading_sigma_rad: float = 0.01
    baro_sigma_m: float = 0.3
    speed_sigma_mps: float = 0.05  # wheel speed and speed log
    origin_lat_deg: float = 59.9  # WGS84 origin of the local ENU frame
    origin_lon_deg: float = 10.7
    origin_alt_m: float = 0.0  # MSL

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Sensor:
    name: str
    every: int  # physics steps between samples
    latency_s: float  # from measurement to publication
    variance: list[float]  # per component, in the reading's units squared
    read: Callable[[SimVehicle, np.random.Generator], list[float]]


@dataclass
class Reading:
    sensor: str
    stamp_s: float  # when it was measured
    values: list[float]


class SensorSuite:
    """IMU, GNSS and heading for every vehicle, plus a barometer (drones), wheel speed
    (cars) or a speed log (ships). GNSS readings are ENU metres; `gnss.geodetic` turns
    them into latitude, longitude and altitude."""

    def __init__(self, vehicle: SimVehicle, physics_dt_s: float,
                 settings: SensorSettings | None = None) -> None:
        s = settings or SensorSettings()

        def every(rate_hz: float) -> int:
            if not rate_hz > 0:
                raise ValueError(f"sensor rates must be positive, got {rate_hz}")
            return max(1, round(1.0 / (rate_hz * physics_dt_s)))

        self.vehicle = vehicle
        self.imu = ImuModel()
        self.gnss = GnssModel(s.origin_lat_deg, s.origin_lon_deg, s.origin_alt_m)
        imu_every, aux_every = every(s.imu_rate_hz), every(s.aux_rate_hz)
        imu_dt = physics_dt_s * imu_every
        heading = ScalarNoise(s.heading_sigma_rad)
        imu = self.imu
        self.sensors = [
            Sensor("imu", imu_every, 0.0,
                   [imu.accel_noise_mps2 ** 2] * 3 + [imu.gyro_noise_rps ** 2] * 3,
                   lambda v, rng: imu.measure(v, imu_dt, rng)),
            Sensor("gnss", every(s.gnss_rate_hz), s.gnss_latency_s,
                   [self.gnss.horizontal_sigma_m ** 2] * 2 + [self.gnss.vertical_sigma_m ** 2],
                   self.gnss.measure),
            Sensor("heading", aux_every, 0.0, [heading.sigma ** 2],
                   lambda v, rng: heading.measure(true_yaw(v), rng)),
        ]
        if vehicle.kind == "quadrotor":
            baro = ScalarNoise(s.baro_sigma_m)
            self.sensors.append(Sensor("baro", aux_every, 0.0, [baro.sigma ** 2],
                                       lambda v, rng: baro.measure(v.state[2], rng)))
        elif vehicle.kind == "car":
            speed = ScalarNoise(s.speed_sigma_mps)
            self.sensors.append(Sensor("wheel_speed", aux_every, 0.0, [speed.sigma ** 2],
                                       lambda v, rng: speed.measure(v.state[3], rng)))
        else:
            speed = ScalarNoise(s.speed_sigma_mps)
            self.sensors.append(Sensor("speed_log", aux_every, 0.0, [speed.sigma ** 2] * 2,
                                       lambda v, rng: speed.measure(v.state[3:5], rng)))

    def sample(self, step: int, time_s: float,
               rng: np.random.Generator) -> Iterator[tuple[Sensor, Reading]]:
        """The readings due at physics step `step` (after it ran), in a fixed order: the
        noise stream, and so the run, depends on the seed alone."""
        for sensor in self.sensors:
            if step % sensor.every == 0:
                yield sensor, Reading(sensor.name, time_s, sensor.read(self.vehicle, rng))
