"""The fusion node: one vehicle's sensors in, its Odometry out at a fixed rate, and the
filter's consistency on `/diagnostics`.

Parameters: `vehicle_id`, `vehicle_type` (quadrotor | vessel | car), `output_rate_hz`,
`diagnostics_rate_hz`, `history_s` (how late a measurement may arrive and still be
used), `imu_rate_hz` (IMU samples are averaged down to this rate, 100 Hz by default,
as autopilots' estimators do), `sensors` ({sensor: {gate_probability, delay_s,
reinit_after}}) and the WGS84 origin of the local ENU frame (`origin_lat_deg`,
`origin_lon_deg`, `origin_alt_m`, the simulator's by default).
Topics: `/<id>/imu` (drones and cars), `/<id>/gnss`, `/<id>/heading`, and `/<id>/baro`,
`/<id>/wheel_speed` or `/<id>/speed_log` in; `/<id>/odometry`, `/<id>/odometry_unready`
(at each output time until the filter is ready) and `/diagnostics` out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pymap3d

from fleetbus.bus.node import Node
from fleetbus.estimation import FILTERS, Fusion, MeasurementError, SensorConfig
from fleetbus.estimation.imu import ImuAverager
from fleetbus.messages import (
    BaroAltitude,
    Diagnostic,
    GnssFix,
    Header,
    Heading,
    Imu,
    Odometry,
    Pose,
    Quaternion,
    SpeedLog,
    Twist,
    Vector3,
    WheelSpeed,
)
from fleetbus.sim_bridge.sensing import SensorSettings

SENSORS = {  # vehicle type -> the sensors its filter uses
    "quadrotor": ("imu", "gnss", "heading", "baro"),
    "car": ("imu", "gnss", "heading", "wheel_speed"),
    "vessel": ("gnss", "heading", "speed_log"),
}


def _cov3(values: list[float]) -> np.ndarray:
    return np.asarray(values, float).reshape(3, 3)


class FusionNode(Node):
    def setup(self) -> None:
        self.vehicle = self.param("vehicle_id", "", "the vehicle whose sensors to fuse").value
        kind = self.param("vehicle_type", "", "quadrotor | vessel | car").value
        if not self.vehicle or kind not in FILTERS:
            raise ValueError(f"fusion: needs a vehicle_id and a vehicle_type of "
                             f"{', '.join(FILTERS)}, got {self.vehicle!r} and {kind!r}")
        configs = self.param("sensors", {}, "{sensor: {gate_probability, delay_s, "
                                            "reinit_after}}").value
        unknown = set(configs) - set(SENSORS[kind])
        if unknown:
            raise ValueError(f"fusion: a {kind} filter uses no sensor {sorted(unknown)} "
                             f"(it uses {', '.join(SENSORS[kind])})")
        try:
            sensors = {name: SensorConfig(**cfg) for name, cfg in configs.items()}
        except TypeError as exc:
            raise ValueError(f"fusion: sensors: {exc}") from None
        self.fusion = Fusion(FILTERS[kind](), sensors, self.param("history_s", 0.5).value)
        imu_rate = self.param("imu_rate_hz", 100.0, "IMU samples averaged down to this rate "
                                                    "(0: every sample)").value
        self.imu_averager = ImuAverager(1.0 / imu_rate if imu_rate > 0 else 0.0)
        defaults = SensorSettings()
        self.origin = tuple(self.param(name, getattr(defaults, name)).value
                            for name in ("origin_lat_deg", "origin_lon_deg", "origin_alt_m"))
        readers: dict[str, tuple[type, Callable[[Any], tuple[Any, Any]]]] = {
            "imu": (Imu, self._imu), "gnss": (GnssFix, self._gnss),
            "heading": (Heading, lambda m: ([m.yaw_rad], [[m.variance]])),
            "baro": (BaroAltitude, lambda m: ([m.altitude_m], [[m.variance]])),
            "wheel_speed": (WheelSpeed, lambda m: ([m.speed_mps], [[m.variance]])),
            "speed_log": (SpeedLog, lambda m: ([m.surge_mps, m.sway_mps],
                                               np.eye(2) * m.variance)),
        }
        self.rank = {sensor: k for k, sensor in enumerate(SENSORS[kind])}
        self.inbox: list[tuple[float, int, str, Any, Any]] = []  # fused at the next output
        self.last_output_ns = -1
        for sensor in SENSORS[kind]:
            msg_type, read = readers[sensor]
            self.subscribe(f"/{self.vehicle}/{sensor}", msg_type,
                           lambda msg, s=sensor, r=read: self._on_reading(s, r, msg),
                           depth=1000)
        self.odometry = self.publisher(f"/{self.vehicle}/odometry", Odometry)
        self.unready = self.publisher(f"/{self.vehicle}/odometry_unready", Diagnostic)
        self.diagnostics = self.publisher("/diagnostics", Diagnostic, depth=100)
        self.timer(1.0 / self.param("output_rate_hz", 50.0).value, self._publish)
        self.timer(1.0 / self.param("diagnostics_rate_hz", 1.0).value, self._diagnose)

    @staticmethod
    def _imu(m: Imu) -> tuple[list[float], np.ndarray]:
        a, w = m.linear_acceleration, m.angular_velocity
        R = np.zeros((6, 6))
        R[:3, :3] = _cov3(m.linear_acceleration_covariance)
        R[3:, 3:] = _cov3(m.angular_velocity_covariance)
        return [a.x, a.y, a.z, w.x, w.y, w.z], R

    def _gnss(self, m: GnssFix) -> tuple[list[float], np.ndarray]:
        e, n, u = pymap3d.geodetic2enu(m.latitude_deg, m.longitude_deg, m.altitude_m,
                                       *self.origin)
        return [float(e), float(n), float(u)], _cov3(m.position_covariance)

    def _on_reading(self, sensor: str, read: Callable[[Any], tuple[Any, Any]],
                    msg: Any) -> None:
        z, R = read(msg)
        stamp = msg.header.stamp_ns * 1e-9
        if sensor == "imu":
            averaged = self.imu_averager.add(stamp, z, R)
            if averaged is None:
                return
            stamp, z, R = averaged
        self.inbox.append((stamp, self.rank[sensor], sensor, z, R))

    def _fuse_inbox(self) -> None:
        """Fuse the readings received since the last output, in stamp order (ties in the
        sensors' order). Each sensor has its own socket, so their readings arrive in any
        interleaving; fused as they came, the filter's start and its updates would depend
        on it, and a lockstep run would not repeat."""
        inbox, self.inbox = sorted(self.inbox, key=lambda r: r[:2]), []
        for stamp, _, sensor, z, R in inbox:
            try:
                self.fusion.add(sensor, stamp, z, R)
            except MeasurementError as exc:
                self._count("invalid_measurement", f"/{self.vehicle}/{sensor}: {exc}")

    def _publish(self) -> None:
        if self.now_ns() == self.last_output_ns:
            return  # sim time jumped several output periods: one estimate per instant
        self.last_output_ns = self.now_ns()
        self._fuse_inbox()
        if not self.fusion.ready:
            # said at each output time, so that a node stepping on the estimates knows
            # at once that none is coming for this instant (see fleetbus.nodes.ticking)
            self.unready.publish(Diagnostic(header=Header(stamp_ns=self.now_ns()),
                                            name=f"fusion/{self.vehicle}", level="warn",
                                            message="not ready: waiting for GNSS and heading"))
            return
        est = self.fusion.estimate_at(self.now())
        p, q, v, w = est.position, est.orientation, est.velocity_body, est.angular_body
        self.odometry.publish(Odometry(
            header=Header(stamp_ns=round(est.stamp_s * 1e9), frame_id="map"),
            child_frame_id=f"{self.vehicle}/base",
            pose=Pose(position=Vector3(x=float(p[0]), y=float(p[1]), z=float(p[2])),
                      orientation=Quaternion(w=float(q[0]), x=float(q[1]), y=float(q[2]),
                                             z=float(q[3]))),
            twist=Twist(linear=Vector3(x=float(v[0]), y=float(v[1]), z=float(v[2])),
                        angular=Vector3(x=float(w[0]), y=float(w[1]), z=float(w[2]))),
            pose_covariance=est.pose_covariance.ravel().tolist(),
            twist_covariance=est.twist_covariance.ravel().tolist()))

    def _diagnose(self) -> None:
        """One Diagnostic per sensor and one for the filter: NIS, test ratio, counts."""
        stamp = Header(stamp_ns=self.now_ns())
        name = f"fusion/{self.vehicle}"
        if not self.fusion.ready:
            self.diagnostics.publish(Diagnostic(header=stamp, name=name, level="warn",
                                                message="not ready: waiting for GNSS and "
                                                        "heading"))
            return
        trace = float(np.trace(self.fusion.filter.estimate().pose_covariance[:2, :2]))
        self.diagnostics.publish(Diagnostic(
            header=stamp, name=name, level="ok", message="ready",
            values={"position_covariance_trace_m2": f"{trace:.4g}"}))
        for sensor, st in sorted(self.fusion.stats.items()):
            level = "ok" if not (st.test_ratio > 1 or st.invalid or st.reinitialised) else "warn"
            values = {"nis": _num(st.nis), "mean_nis": _num(st.mean_nis),
                      "test_ratio": _num(st.test_ratio), "accepted": str(st.accepted),
                      "rejected": str(st.rejected), "invalid": str(st.invalid),
                      "late": str(st.late), "reinitialised": str(st.reinitialised)}
            self.diagnostics.publish(Diagnostic(header=stamp, name=f"{name}/{sensor}",
                                                level=level, values=values))


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"
