"""What a PX4 autopilot in the loop senses: HIL_SENSOR, HIL_GPS and HIL_STATE_QUATERNION
built from a HilBody's kinematics, with seeded noise, each sensor at its own rate.

Units and groups follow the PX4 simulator protocol: accelerometer specific force in m/s^2
and gyro in rad/s (body FRD), magnetometer in gauss, pressures in hPa; `fields_updated`
names only the sensors sampled in that message, each as the complete group PX4 accepts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pymavlink.dialects.v20 import common as mavlink

from fleetbus.sim_bridge.frames import enu_ned, geodetic, rotate_inverse
from fleetbus.sim_bridge.hil_body import HilBody, Kinematics

# HIL_SENSOR_UPDATED_FLAGS groups PX4 takes only when complete
ACCEL, GYRO, MAG, BARO = 0x7, 0x38, 0x1C0, 0x1A00
STANDARD_GRAVITY = 9.80665
SEA_LEVEL_HPA, SEA_LEVEL_C, LAPSE_C_PER_M = 1013.25, 15.0, 0.0065


def isa_pressure_hpa(altitude_m: float) -> float:
    """Pressure of the ICAO standard atmosphere at an altitude (m MSL, troposphere)."""
    return SEA_LEVEL_HPA * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588


@dataclass(frozen=True)
class SensorNoise:
    """One standard deviation per reading; `quiet()` for exact conformance checks."""

    accel_mps2: float = 0.02
    gyro_rps: float = 0.002
    mag_gauss: float = 0.002
    baro_m: float = 0.05
    gps_m: float = 0.3
    gps_mps: float = 0.05

    @classmethod
    def quiet(cls) -> SensorNoise:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Px4SensorSettings:
    """Rates (Hz) of the slower sensors (the IMU runs at the physics rate), the world the
    vehicle is in, and the noise. The default field is roughly Oslo's: 0.51 gauss, 74 deg
    inclination."""

    gps_rate_hz: float = 10.0
    mag_rate_hz: float = 100.0
    baro_rate_hz: float = 50.0
    origin_lat_deg: float = 59.9
    origin_lon_deg: float = 10.7
    origin_alt_m: float = 0.0
    magnetic_field_ned_gauss: tuple[float, float, float] = (0.14, 0.01, 0.49)
    noise: SensorNoise = field(default_factory=SensorNoise)
    seed: int = 0
    utc_start_us: int | None = None  # GPS time at sim time 0; None: the wall clock at start

    def __post_init__(self) -> None:
        for name in ("gps_rate_hz", "mag_rate_hz", "baro_rate_hz"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Px4SensorSettings.{name} must be positive, "
                                 f"got {getattr(self, name)}")


class _Schedule:
    """Due times of a sensor running at `rate_hz`, on the simulation clock (us)."""

    def __init__(self, rate_hz: float) -> None:
        self.period_us = round(1e6 / rate_hz)
        self.next_us = 0

    def due(self, now_us: int) -> bool:
        if now_us < self.next_us:
            return False
        # on the rate's grid, without a burst after a pause
        self.next_us = (now_us // self.period_us + 1) * self.period_us
        return True


class Px4Sensors:
    """Builds the sensor messages of one simulation instant."""

    def __init__(self, body: HilBody, mav: mavlink.MAVLink, physics_dt_s: float,
                 settings: Px4SensorSettings | None = None) -> None:
        self.body, self.mav, self.physics_dt_s = body, mav, physics_dt_s
        self.settings = settings or Px4SensorSettings()
        self.reset()

    def reset(self) -> None:
        s = self.settings
        self.rng = np.random.default_rng(s.seed)
        self.gps, self.mag = _Schedule(s.gps_rate_hz), _Schedule(s.mag_rate_hz)
        self.baro = _Schedule(s.baro_rate_hz)
        self.ground_truth: _Schedule | None = None
        self.utc_start_us = (s.utc_start_us if s.utc_start_us is not None
                             else int(time.time() * 1e6))

    def request_ground_truth(self, interval_us: float) -> None:
        """MAV_CMD_SET_MESSAGE_INTERVAL for HIL_STATE_QUATERNION: > 0 us, or -1 to stop
        (0, "the default rate", is the physics rate here)."""
        if interval_us < 0:
            self.ground_truth = None
        else:
            # Never faster than the physics rate, which is all one message a step can do: an
            # interval under 0.5 us made a period of 0, and due() divided by it.
            step_hz = 1.0 / self.physics_dt_s
            self.ground_truth = _Schedule(min(1e6 / interval_us, step_hz) if interval_us > 0
                                          else step_hz)

    def messages(self, time_us: int) -> list[mavlink.MAVLink_message]:
        """HIL_SENSOR every time; HIL_GPS and the ground truth when due."""
        k = self.body.kinematics()
        out: list[mavlink.MAVLink_message] = [self._sensor(time_us, k)]
        if self.gps.due(time_us):
            out.append(self._gps(time_us, k))
        if self.ground_truth is not None and self.ground_truth.due(time_us):
            out.append(self._ground_truth(time_us, k))
        return out

    def _geodetic(self, ned: Sequence[float]) -> tuple[float, float, float]:
        s = self.settings
        return geodetic(enu_ned(ned), (s.origin_lat_deg, s.origin_lon_deg, s.origin_alt_m))

    def _sensor(self, time_us: int, k: Kinematics) -> mavlink.MAVLink_message:
        noise = self.settings.noise
        n = self.rng.standard_normal(10).tolist()
        accel = [a + noise.accel_mps2 * w for a, w in zip(k.specific_force_frd, n[0:3],
                                                            strict=True)]
        gyro = [g + noise.gyro_rps * w for g, w in zip(k.gyro_frd, n[3:6], strict=True)]
        fields = ACCEL | GYRO
        mag = [0.0, 0.0, 0.0]
        if self.mag.due(time_us):
            field_body = rotate_inverse(k.attitude_ned, self.settings.magnetic_field_ned_gauss)
            mag = [m + noise.mag_gauss * w for m, w in zip(field_body, n[6:9], strict=True)]
            fields |= MAG
        pressure = altitude = temperature = 0.0
        if self.baro.due(time_us):
            altitude = self.settings.origin_alt_m - k.position_ned[2] + noise.baro_m * n[9]
            pressure = isa_pressure_hpa(altitude)
            temperature = SEA_LEVEL_C - LAPSE_C_PER_M * altitude
            fields |= BARO
        return self.mav.hil_sensor_encode(time_us, *accel, *gyro, *mag, pressure, 0.0,
                                          altitude, temperature, fields, 0)

    def _gps(self, time_us: int, k: Kinematics) -> mavlink.MAVLink_message:
        noise = self.settings.noise
        n = self.rng.standard_normal(6).tolist()
        ned = [p + noise.gps_m * w for p, w in zip(k.position_ned, n[0:3], strict=True)]
        vel = [v + noise.gps_mps * w for v, w in zip(k.velocity_ned, n[3:6], strict=True)]
        lat, lon, alt = self._geodetic(ned)
        ground_speed = math.hypot(vel[0], vel[1])
        cog = round(math.degrees(math.atan2(vel[1], vel[0])) % 360.0 * 100) % 36000
        return self.mav.hil_gps_encode(
            self.utc_start_us + time_us, 3, round(lat * 1e7), round(lon * 1e7),
            round(alt * 1000), 100, 150, _uint16(ground_speed * 100),
            _int16(vel[0] * 100), _int16(vel[1] * 100), _int16(vel[2] * 100),
            cog, 12, 0, 0)

    def _ground_truth(self, time_us: int, k: Kinematics) -> mavlink.MAVLink_message:
        lat, lon, alt = self._geodetic(k.position_ned)
        speed = _uint16(math.sqrt(sum(v * v for v in k.velocity_ned)) * 100)
        mg = [_int16(a / STANDARD_GRAVITY * 1000) for a in k.specific_force_frd]
        return self.mav.hil_state_quaternion_encode(
            time_us, list(k.attitude_ned), *k.gyro_frd, round(lat * 1e7), round(lon * 1e7),
            round(alt * 1000), *(_int16(v * 100) for v in k.velocity_ned), speed, speed, *mg)


def _int16(value: float) -> int:
    return max(-32768, min(32767, round(value)))


def _uint16(value: float) -> int:
    return max(0, min(65535, round(value)))
