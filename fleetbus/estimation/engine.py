"""The part of sensor fusion every vehicle shares: measurements applied at their own
stamps (late ones inserted and the filter re-run), chi-square gating, re-initialisation
after a rejection streak, start-up, and the numbers that show whether a filter is
consistent. The filters themselves (drone, car, ship) live beside this module."""

from __future__ import annotations

import bisect
import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.stats import chi2


class MeasurementError(ValueError):
    """A measurement that cannot be used: non-finite values or a covariance that is not
    positive definite. The message names the sensor."""


@dataclass(frozen=True)
class Measurement:
    """One reading: `z` (1-D) with covariance `R`, measured at `stamp_s` (seconds on the
    bus clock). The IMU is a measurement too: it drives the drone's prediction."""

    sensor: str
    stamp_s: float
    z: np.ndarray
    R: np.ndarray

    @classmethod
    def checked(cls, sensor: str, stamp_s: float, z: Any, R: Any,
                trusted: set[bytes] | None = None) -> Measurement:
        """A measurement, or MeasurementError saying what is wrong with it. `trusted`
        holds covariances already found positive definite (as bytes): a sensor sends the
        same R again and again, and its symmetry and eigenvalue test cost ~10x the rest
        of this check. New good ones are added to it."""
        z = np.atleast_1d(np.asarray(z, dtype=float))
        R = np.atleast_2d(np.asarray(R, dtype=float))
        if z.ndim != 1 or R.shape != (len(z), len(z)):
            raise MeasurementError(f"{sensor}: covariance of shape {R.shape} does not fit "
                                   f"{len(z)} values")
        if not (math.isfinite(stamp_s) and np.all(np.isfinite(z)) and np.all(np.isfinite(R))):
            raise MeasurementError(f"{sensor}: not finite (z={z.tolist()}, stamp={stamp_s})")
        key = R.tobytes() if trusted is not None else b""
        if key not in (trusted or ()):
            if not np.allclose(R, R.T) or np.linalg.eigvalsh(R).min() <= 0:
                raise MeasurementError(f"{sensor}: covariance is not positive definite")
            if trusted is not None:
                if len(trusted) >= TRUSTED_COVARIANCES:  # a sensor whose R keeps changing
                    trusted.clear()
                trusted.add(key)
        return cls(sensor, float(stamp_s), z, R)


TRUSTED_COVARIANCES = 16  # distinct checked covariances remembered per sensor


class Filter(Protocol):
    """What the engine needs of a vehicle's filter. `save`/`load` copy its whole state,
    so a late measurement can be inserted and the filter re-run from before it."""

    driver: str | None  # the sensor that drives prediction (the drone's IMU), if any
    time_s: float

    def initialise(self, latest: dict[str, Measurement]) -> bool: ...
    def predict(self, t: float) -> None: ...
    def drive(self, m: Measurement) -> None: ...
    def update(self, m: Measurement) -> tuple[np.ndarray, np.ndarray]: ...
    def reset_from(self, m: Measurement) -> None: ...
    def save(self) -> Any: ...
    def load(self, state: Any) -> None: ...
    def estimate(self) -> Any: ...


@functools.cache
def chi_square_gate(probability: float, dof: int) -> float:
    """The NIS below which a measurement of `dof` values passes with this probability."""
    return float(chi2.ppf(probability, dof)) if probability < 1 else math.inf


@dataclass
class SensorConfig:
    gate_probability: float = 0.999  # chi-square gate; 1 disables gating
    delay_s: float = 0.0  # subtracted from every stamp (a sensor that stamps on arrival)
    reinit_after: int = 10  # consecutive rejections that re-initialise from this sensor


@dataclass
class SensorStats:
    """Per sensor, for diagnostics: the consistency of the filter as it runs."""

    accepted: int = 0
    rejected: int = 0  # by the gate
    invalid: int = 0  # NaN, inf, a bad covariance
    late: int = 0  # older than the history window
    reinitialised: int = 0
    nis: float = math.nan  # normalised innovation squared of the last update
    gate: float = math.nan  # its chi-square threshold
    recent_nis: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    @property
    def test_ratio(self) -> float:
        """NIS over the gate: above 1 the measurement was rejected."""
        return self.nis / self.gate if self.gate else math.nan

    @property
    def mean_nis(self) -> float:
        return float(np.mean(self.recent_nis)) if self.recent_nis else math.nan


@dataclass
class _Event:
    key: tuple[float, int, str, int]  # a total order independent of arrival (but for
    # two readings of one sensor at one stamp): stamp, the driver first, sensor, arrival
    m: Measurement
    decision: str = ""  # "accepted" or "rejected" once processed (gated sensors only)
    reinitialised: bool = False  # counted once, however often a replay repeats it


class Fusion:
    """Runs a filter over measurements in stamp order. A measurement older than the newest
    one but inside `history_s` is inserted and the filter re-run from there; an older one
    is counted as late and dropped. Until the filter could initialise (first GNSS and
    heading), `ready` is False and measurements only feed the initialisation."""

    def __init__(self, filter_: Filter, sensors: dict[str, SensorConfig] | None = None,
                 history_s: float = 0.5) -> None:
        self.filter = filter_
        self.configs = sensors or {}
        self.history_s = history_s
        self.stats: dict[str, SensorStats] = {}
        self.ready = False
        self._latest: dict[str, Measurement] = {}  # before start-up
        self._events: list[_Event] = []
        self._keys: list[tuple[float, int, str, int]] = []
        self._after: list[Any] = []  # engine state after each event
        self._base: Any = None  # engine state before the first kept event
        self._streaks: dict[str, int] = {}
        self._arrivals = 0
        self._trusted: dict[str, set[bytes]] = {}  # per sensor, see Measurement.checked

    def config(self, sensor: str) -> SensorConfig:
        return self.configs.setdefault(sensor, SensorConfig())

    def stat(self, sensor: str) -> SensorStats:
        return self.stats.setdefault(sensor, SensorStats())

    def add(self, sensor: str, stamp_s: float, z: Any, R: Any) -> None:
        """Take one reading. Bad values are counted (`invalid`) and raise
        MeasurementError; nothing of them reaches the filter."""
        try:
            m = Measurement.checked(sensor, stamp_s - self.config(sensor).delay_s, z, R,
                                    self._trusted.setdefault(sensor, set()))
        except MeasurementError:
            self.stat(sensor).invalid += 1
            raise
        self._arrivals += 1
        if not self.ready:
            self._latest[sensor] = m
            if self.filter.initialise(self._latest):
                self.ready = True
                self._base = self._save()
            return
        newest = self._keys[-1][0] if self._keys else self.filter.time_s
        if m.stamp_s < max(newest - self.history_s, self._base_time()):
            self.stat(sensor).late += 1
            return
        event = _Event((m.stamp_s, int(sensor != self.filter.driver), sensor, self._arrivals), m)
        index = bisect.bisect(self._keys, event.key)
        if index < len(self._events):  # late but in the window: re-run from before it
            self._load(self._after[index - 1] if index else self._base)
        self._events.insert(index, event)
        self._keys.insert(index, event.key)
        del self._after[index:]
        for e in self._events[index:]:
            self._process(e)
            self._after.append(self._save())
        self._trim()

    def estimate_at(self, t: float) -> Any:
        """The filter's estimate predicted to time `t` (or at its own time, if later),
        leaving the filter as it was: outputs at a fixed rate need not wait for a
        measurement."""
        saved = self.filter.save()
        self.filter.predict(t)
        try:
            return self.filter.estimate()
        finally:
            self.filter.load(saved)

    def _base_time(self) -> float:
        return self._base[0] if self._base is not None else -math.inf

    def _trim(self) -> None:
        horizon = self._keys[-1][0] - self.history_s
        drop = bisect.bisect_left(self._keys, (horizon, -1, "", -1))
        if drop:
            self._base = self._after[drop - 1]
            del self._events[:drop], self._keys[:drop], self._after[:drop]

    def _save(self) -> Any:
        return (self.filter.time_s, self.filter.save(), dict(self._streaks))

    def _load(self, state: Any) -> None:
        _, saved, streaks = state
        self.filter.load(saved)
        self._streaks = dict(streaks)

    def _process(self, e: _Event) -> None:
        m, f = e.m, self.filter
        if m.sensor == f.driver:
            f.drive(m)
            return
        f.predict(m.stamp_s)
        config, stats = self.config(m.sensor), self.stat(m.sensor)
        before = f.save()
        y, S = f.update(m)
        nis = float(y @ np.linalg.solve(S, y))
        gate = chi_square_gate(config.gate_probability, len(y))
        stats.nis, stats.gate = nis, gate
        stats.recent_nis.append(nis)
        decision = "accepted" if nis <= gate else "rejected"
        if decision == "rejected":
            f.load(before)
            streak = self._streaks.get(m.sensor, 0) + 1
            if streak >= config.reinit_after:
                f.reset_from(m)  # a real jump: follow the sensor rather than diverge
                stats.reinitialised += not e.reinitialised
                e.reinitialised = True
                streak = 0
            self._streaks[m.sensor] = streak
        else:
            self._streaks[m.sensor] = 0
        if e.decision != decision:  # a replay may change an earlier verdict
            if e.decision:
                setattr(stats, e.decision, getattr(stats, e.decision) - 1)
            setattr(stats, decision, getattr(stats, decision) + 1)
            e.decision = decision
