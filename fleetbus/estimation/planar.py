"""What the car and ship filters share: a planar state that starts from GNSS and
heading, measurements that observe some of its states directly, and save/load for the
engine's re-runs. Subclasses provide the filterpy filter (`kf`) and the motion model."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from fleetbus.estimation.engine import Measurement
from fleetbus.estimation.estimate import reset_rows

X, Y, YAW = 0, 1, 2


class PlanarFilter:
    driver = None
    observes: ClassVar[dict[str, list[int]]]  # sensor -> the states it measures
    navigation_states: ClassVar[list[int]]  # those the truth can be compared with
    initial_variances: ClassVar[list[float]]  # of the states after x, y and yaw
    kf: Any

    time_s = -math.inf

    def initialise(self, latest: dict[str, Measurement]) -> bool:
        gnss, heading = latest.get("gnss"), latest.get("heading")
        if gnss is None or heading is None:
            return False
        self.time_s = max(gnss.stamp_s, heading.stamp_s)
        n = 3 + len(self.initial_variances)
        self.kf.x = np.zeros(n)
        self.kf.x[[X, Y, YAW]] = gnss.z[0], gnss.z[1], heading.z[0]
        self.kf.P = np.diag([gnss.R[0, 0], gnss.R[1, 1], heading.R[0, 0],
                             *self.initial_variances])
        return True

    def select(self, m: Measurement) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The states a measurement observes, and the part of it that observes them."""
        rows = self.observes[m.sensor]
        if m.sensor == "gnss":
            return rows, m.z[:2], m.R[:2, :2]  # on the ground or at sea level: no height
        if m.sensor == "imu":
            return rows, m.z[5:6], m.R[5:6, 5:6]  # the z gyro
        return rows, m.z, m.R

    def reset_from(self, m: Measurement) -> None:
        rows, z, R = self.select(m)
        self.kf.x[rows] = z
        reset_rows(self.kf.P, rows, R)

    def save(self) -> Any:
        return self.kf.x.copy(), self.kf.P.copy(), self.time_s

    def load(self, state: Any) -> None:
        x, P, self.time_s = state
        self.kf.x, self.kf.P = x.copy(), P.copy()

    def navigation(self) -> tuple[np.ndarray, np.ndarray]:
        keep = self.navigation_states
        return self.kf.x[keep].copy(), self.kf.P[np.ix_(keep, keep)].copy()
