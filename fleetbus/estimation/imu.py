"""IMU down-sampling: a filter need not take every IMU sample as a step of its own.

The simulator's IMU (like a real one's delta-velocity and delta-angle outputs) reports
the mean over the interval that ends at each stamp, so the mean of consecutive samples,
weighted by their intervals, is exactly the mean over their joint interval. Feeding those
means at ~100 Hz instead of every sample at 400 Hz is what autopilots' estimators do; it
divides the cost of the covariance propagation by the ratio and loses only second-order
(coning and sculling) terms, which are negligible at these rates.
"""

from __future__ import annotations

import numpy as np


class ImuAverager:
    """Collects IMU samples and returns one averaged sample per `period_s` of stamps.
    `period_s = 0` passes every sample through."""

    def __init__(self, period_s: float) -> None:
        if not period_s >= 0.0:
            raise ValueError(f"IMU averaging period must be >= 0 s, got {period_s}")
        self.period_s = period_s
        self._start: float | None = None  # stamp the current window begins at
        self._last: float | None = None  # stamp of the last sample taken
        self._sum_z = self._sum_R = None
        self._weight = 0.0

    def add(self, stamp_s: float, z: np.ndarray, R: np.ndarray
            ) -> tuple[float, np.ndarray, np.ndarray] | None:
        """(stamp, mean z, its covariance) when a window is complete, else None. A
        sample older than the last one, or a non-finite one, is returned alone: the fusion
        engine places the one and counts the other, and neither spoils a window."""
        z, R = np.asarray(z, float), np.asarray(R, float)
        if (self.period_s == 0.0 or (self._last is not None and stamp_s <= self._last)
                or not (np.isfinite(stamp_s) and np.isfinite(z).all() and np.isfinite(R).all())):
            return stamp_s, z, R
        if self._start is None:
            self._start = self._last = stamp_s
            return stamp_s, z, R  # the first sample: nothing to average it with
        w = stamp_s - self._last
        self._last = stamp_s
        self._sum_z = z * w if self._sum_z is None else self._sum_z + z * w
        # independent samples: Var(sum w_i z_i) = sum w_i^2 R_i
        self._sum_R = R * w * w if self._sum_R is None else self._sum_R + R * w * w
        self._weight += w
        if stamp_s - self._start < self.period_s * (1.0 - 1e-9):
            return None
        out = (stamp_s, self._sum_z / self._weight, self._sum_R / self._weight**2)
        self._start, self._sum_z, self._sum_R, self._weight = stamp_s, None, None, 0.0
        return out
