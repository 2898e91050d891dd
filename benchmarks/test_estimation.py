"""Per-step cost of each estimator (`python -m pytest benchmarks --benchmark-only`).

Each "predict" and "update" group times one step of a project filter (filterpy
underneath) and the same step of the floor: a minimal hand-written numpy filter of exactly
the same math (same state, Jacobians, sigma points, weights and noise), checked equal to
the project filter after the step. The relative figures pytest-benchmark prints within a
group are the ratio ours / floor.

- car, CarFilter (filterpy EKF, CTRV model): predict; gnss, heading, wheel_speed, imu
- ship, ShipFilter (filterpy UKF): predict; gnss, heading, speed_log
- drone, DroneFilter (error state on filterpy's KalmanFilter): IMU-driven predict; gnss,
  baro, heading

The "engine" groups put the bare filter step beside the same sample through
`Fusion.add` (checks, event ordering, gating, snapshots): in order, and for GNSS also
as the simulator delivers it, 0.1 s late, which re-runs the history since its stamp.

The filters start from a few seconds of the offline simulator's readings at the rates of
benchmarks.fusion_cpu (400 Hz IMU, 10 Hz GNSS and aux sensors): realistic, correlated
states and covariances.
"""

from __future__ import annotations

import copy
import functools
import gc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from benchmarks.fusion_cpu import Recording, record, variances
from fleetbus.estimation import FILTERS, Fusion, Measurement

WARMUP_S = 4.0  # of simulated readings before the step
ROUNDS, ENGINE_ROUNDS = 2000, 200  # the engine's: one GNSS fix each, at 10 Hz
RECORD_S = WARMUP_S + 1.2 * ENGINE_ROUNDS / 10 + 1.0
UPDATES = {"car": ["gnss", "heading", "wheel_speed", "imu"],
           "vessel": ["gnss", "heading", "speed_log"],
           "quadrotor": ["gnss", "baro", "heading"]}
NAMES = {"car": "car", "vessel": "ship", "quadrotor": "drone"}


# -- the floor: the same math in minimal numpy -----------------------------------------------


def wrap(angle: Any) -> Any:
    """An angle in [-pi, pi) (a float or an array)."""
    return (angle + math.pi) % math.tau - math.pi


def kalman_update(P: np.ndarray, H: np.ndarray, y: np.ndarray,
                  R: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The linear update in Joseph form, as filterpy's EKF and KalmanFilter write it:
    the state correction, the new covariance and the innovation covariance."""
    PHT = P @ H.T
    S = H @ PHT + R
    K = PHT @ np.linalg.inv(S)
    I_KH = np.eye(len(P)) - K @ H
    return K @ y, I_KH @ P @ I_KH.T + K @ R @ K.T, S


def selection(rows: list[int], n: int) -> np.ndarray:
    """H of a measurement that observes these states directly."""
    H = np.zeros((len(rows), n))
    H[range(len(rows)), rows] = 1.0
    return H


def white_accel(dt: float) -> np.ndarray:
    """Covariance of (position, velocity) after dt of unit white acceleration."""
    return np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])


def observed(rows: dict[str, tuple[list[int], slice]], m: Measurement) -> tuple:
    """The states a sensor observes, and the part of its reading that observes them."""
    states, part = rows[m.sensor]
    return states, m.z[part], m.R[part, part]


# car: [x, y, yaw, speed, yaw rate], CTRV

CAR_ROWS = {"gnss": ([0, 1], slice(0, 2)), "heading": ([2], slice(0, 1)),
            "wheel_speed": ([3], slice(0, 1)), "imu": ([4], slice(5, 6))}  # the z gyro


def car_predict(x: np.ndarray, P: np.ndarray, dt: float, accel_sigma: float,
                yaw_accel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    px, py, yaw, v, w = x
    mid = yaw + w * dt / 2  # the mean heading over the step
    c, s = math.cos(yaw), math.sin(yaw)
    x = np.array([px + v * math.cos(mid) * dt, py + v * math.sin(mid) * dt,
                  wrap(yaw + w * dt), v, w])
    F = np.eye(5)
    F[0, 2], F[0, 3], F[1, 2], F[1, 3], F[2, 4] = -v * s * dt, c * dt, v * c * dt, s * dt, dt
    along = np.array([[c, 0.0], [s, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # -> x, y, v
    yawing = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])  # yaw, rate
    a = white_accel(dt)
    Q = along @ a @ along.T * accel_sigma ** 2 + yawing @ a @ yawing.T * yaw_accel_sigma ** 2
    return x, F @ P @ F.T + Q


def car_update(x: np.ndarray, P: np.ndarray, m: Measurement) -> tuple:
    rows, z, R = observed(CAR_ROWS, m)
    y = z - x[rows]
    if m.sensor == "heading":
        y = wrap(y)
    dx, P, S = kalman_update(P, selection(rows, 5), y, R)
    x = x + dx
    x[2] = wrap(x[2])
    return x, P, y, S


# ship: [x, y, yaw, surge, sway, yaw rate, current east, north], unscented

SHIP_ROWS = {"gnss": ([0, 1], slice(0, 2)), "heading": ([2], slice(0, 1)),
             "speed_log": ([3, 4], slice(0, 2))}


@dataclass(frozen=True)
class Unscented:
    """Van der Merwe's scaled sigma points of an n-state."""

    n: int
    alpha: float
    beta: float
    kappa: float

    @functools.cached_property
    def lam(self) -> float:
        return self.alpha ** 2 * (self.n + self.kappa) - self.n

    @functools.cached_property
    def Wm(self) -> np.ndarray:
        return np.r_[self.lam / (self.n + self.lam), np.full(2 * self.n, 0.5 / (self.n + self.lam))]

    @functools.cached_property
    def Wc(self) -> np.ndarray:
        return self.Wm + np.r_[1 - self.alpha ** 2 + self.beta, np.zeros(2 * self.n)]

    def points(self, x: np.ndarray, P: np.ndarray) -> np.ndarray:
        U = np.linalg.cholesky((self.n + self.lam) * P).T  # rows of the upper factor
        sigmas = np.vstack([x, x + U, x - U])
        sigmas[1:, 2] = wrap(sigmas[1:, 2])  # the yaw
        return sigmas

    def cov(self, d: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Weighted covariance of the deviations d and e (one row per sigma point)."""
        return d.T @ (self.Wc[:, None] * e)

    def mean_angle(self, angles: np.ndarray) -> float:
        return math.atan2(self.Wm @ np.sin(angles), self.Wm @ np.cos(angles))


SHIP_POINTS = Unscented(8, alpha=0.1, beta=2.0, kappa=0.0)


def ship_move(s: np.ndarray, dt: float) -> np.ndarray:
    """All sigma points at once: constant body velocity and yaw rate, plus the current."""
    yaw = s[:, 2] + s[:, 5] * dt / 2
    c, sn = np.cos(yaw), np.sin(yaw)
    out = s.copy()
    out[:, 0] += (c * s[:, 3] - sn * s[:, 4] + s[:, 6]) * dt
    out[:, 1] += (sn * s[:, 3] + c * s[:, 4] + s[:, 7]) * dt
    out[:, 2] = s[:, 2] + s[:, 5] * dt
    return out


def ship_predict(x: np.ndarray, P: np.ndarray, dt: float, accel: float, yaw_accel: float,
                 walk: float, ut: Unscented = SHIP_POINTS) -> tuple:
    moved = ship_move(ut.points(x, P), dt)
    x = ut.Wm @ moved
    x[2] = ut.mean_angle(moved[:, 2])
    d = moved - x
    d[:, 2] = wrap(d[:, 2])
    Q = np.zeros((8, 8))
    a = white_accel(dt)
    for pos, vel, sigma in ((0, 3, accel), (1, 4, accel), (2, 5, yaw_accel)):
        Q[np.ix_([pos, vel], [pos, vel])] = a * sigma ** 2
    Q[6, 6] = Q[7, 7] = walk ** 2 * dt
    P = ut.cov(d, d) + Q
    return x, P, ut.points(x, P)  # as filterpy: the update draws from the prior's points


def ship_update(x: np.ndarray, P: np.ndarray, sigmas: np.ndarray, m: Measurement,
                ut: Unscented = SHIP_POINTS) -> tuple:
    rows, z, R = observed(SHIP_ROWS, m)
    zs = sigmas[:, rows]
    if m.sensor == "heading":
        zp = np.array([ut.mean_angle(zs[:, 0])])
        dz = wrap(zs - zp)
        y = wrap(z - zp)
    else:
        zp = ut.Wm @ zs
        dz, y = zs - zp, z - zp
    S = ut.cov(dz, dz) + R
    dx = sigmas - x
    dx[:, 2] = wrap(dx[:, 2])
    K = ut.cov(dx, dz) @ np.linalg.inv(S)
    x = x + K @ y
    x[2] = wrap(x[2])
    return x, P - K @ S @ K.T, y, S


# drone: nominal (p, v, q, accel bias, gyro bias) and the 15 error states' covariance

Nominal = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
GRAVITY = np.array([0.0, 0.0, -9.81])


def rotation(q: np.ndarray) -> np.ndarray:
    """Body to world of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def turn(q: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """q followed by a body-frame rotation vector."""
    theta = math.sqrt(angle @ angle)
    half = 0.5 if theta < 1e-12 else math.sin(theta / 2) / theta
    w2 = 1.0 if theta < 1e-12 else math.cos(theta / 2)
    x2, y2, z2 = angle * half
    w1, x1, y1, z1 = q
    out = np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                    w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])
    return out / math.sqrt(out @ out)


def skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def yaw_of(q: np.ndarray) -> float:
    w, x, y, z = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def drone_predict(state: Nominal, imu: np.ndarray, dt: float,
                  noise: tuple[float, float, float, float]) -> Nominal:
    p, v, q, ba, bg, P = state
    force, omega = imu[:3] - ba, imu[3:] - bg
    R = rotation(q)
    accel = R @ force + GRAVITY
    F = np.eye(15)
    F[0:3, 3:6] = np.eye(3) * dt
    F[3:6, 6:9] = -R @ skew(force) * dt
    F[3:6, 9:12] = -R * dt
    F[6:9, 6:9] = np.eye(3) - skew(omega) * dt
    F[6:9, 12:15] = -np.eye(3) * dt
    accel_noise, gyro_noise, accel_walk, gyro_walk = noise
    Q = np.repeat([0.0, (accel_noise * dt) ** 2, (gyro_noise * dt) ** 2,
                   accel_walk ** 2 * dt, gyro_walk ** 2 * dt], 3)
    return (p + v * dt + 0.5 * accel * dt * dt, v + accel * dt, turn(q, omega * dt), ba, bg,
            F @ P @ F.T + np.diag(Q))


def drone_update(state: Nominal, m: Measurement) -> tuple:
    """The error state is zero before every update (it is folded into the nominal after
    each), so the innovation is the measurement minus the nominal's prediction."""
    p, v, q, ba, bg, P = state
    H = np.zeros((len(m.z), 15))
    if m.sensor == "gnss":
        H[:, 0:3] = np.eye(3)
        y = m.z - p
    elif m.sensor == "baro":
        H[0, 2] = 1.0
        y = m.z - p[2]
    else:  # heading: yaw's sensitivity to each attitude error, by a finite difference
        yaw = yaw_of(q)
        for axis in range(3):
            H[0, 6 + axis] = wrap(yaw_of(turn(q, np.eye(3)[axis] * 1e-6)) - yaw) / 1e-6
        y = np.array([wrap(m.z[0] - yaw)])
    dx, P, S = kalman_update(P, H, y, m.R)
    return (p + dx[0:3], v + dx[3:6], turn(q, dx[6:9]), ba + dx[9:12], bg + dx[12:15], P), y, S


# -- the cases: filters warmed up on simulated readings ----------------------------------------


@dataclass
class Case:
    kind: str
    fusion: Fusion  # after WARMUP_S of readings; only ever deep-copied
    t: float  # the next step's time (the next IMU sample, or the next reading)
    R: dict[str, np.ndarray]
    next: dict[str, Measurement]  # the next reading of each sensor, stamped t
    pending: Recording  # the readings after the warm-up, in delivery order

    def filter(self) -> Any:
        """A fresh copy of the warmed-up filter."""
        return copy.deepcopy(self.fusion.filter)


@functools.cache
def case(kind: str) -> Case:
    R = {name: np.diag(v) for name, v in variances(kind).items()}
    readings = record(kind, RECORD_S)
    fusion = Fusion(FILTERS[kind]())
    done = 0
    for deliver, r in readings:  # up to the delivery of a GNSS fix (0.1 s after its stamp)
        if deliver > WARMUP_S and r.sensor == "gnss":
            break
        fusion.add(r.sensor, r.stamp_s, r.values, R[r.sensor])
        done += 1
    assert fusion.ready
    pending = readings[done:]
    t = min(r.stamp_s for _, r in pending if r.stamp_s > fusion.filter.time_s)
    first = {}
    for _, r in pending:
        first.setdefault(r.sensor, r)
    return Case(kind, fusion, t, R,
                {s: Measurement.checked(s, t, r.values, R[s]) for s, r in first.items()},
                pending)


def ours_state(kind: str, f: Any) -> list[np.ndarray]:
    """What the project filter's step produced, to compare with the floor's."""
    if kind == "quadrotor":
        return [f.p, f.v, f.q, f.ba, f.bg, f.kf.P]
    return [f.kf.x, f.kf.P] + ([f.kf.sigmas_f] if kind == "vessel" else [])


def assert_same(ours: list[np.ndarray], floor: list[np.ndarray]) -> None:
    assert len(ours) == len(floor)
    for a, b in zip(ours, floor, strict=True):
        a = np.asarray(a, float)
        np.testing.assert_allclose(np.asarray(b, float).reshape(a.shape), a, rtol=1e-7,
                                   atol=1e-12 * max(1.0, float(np.abs(a).max())))


def ours_predict(c: Case) -> tuple[Any, Callable[[], None]]:
    """The project filter and its predict step to c.t (the drone: driven by the IMU)."""
    f = c.filter()
    if c.kind == "quadrotor":
        return f, functools.partial(f.drive, c.next["imu"])
    return f, functools.partial(f.predict, c.t)


def floor_prior(c: Case) -> Any:
    f = c.fusion.filter
    if c.kind == "quadrotor":
        return (f.p, f.v, f.q, f.ba, f.bg, f.kf.P), f.time_s
    return (f.kf.x, f.kf.P), f.time_s


def floor_predict(c: Case) -> Callable[[], Any]:
    """The floor's predict step to c.t, from the warmed-up filter's state."""
    f = c.fusion.filter
    state, time_s = floor_prior(c)
    dt = c.t - time_s
    if c.kind == "car":
        return functools.partial(car_predict, *state, dt, f.accel_sigma, f.yaw_accel_sigma)
    if c.kind == "vessel":
        return functools.partial(ship_predict, *state, dt, *f.sigmas)
    return functools.partial(drone_predict, state, c.next["imu"].z, dt, f.noise)


def floor_update(c: Case, sensor: str) -> Callable[[], Any]:
    """The floor's update by `sensor` at c.t, from its own predicted state."""
    prior = floor_predict(c)()
    m = c.next[sensor]
    if c.kind == "car":
        return functools.partial(car_update, *prior, m)
    if c.kind == "vessel":
        return functools.partial(ship_update, *prior, m)
    return functools.partial(drone_update, prior, m)


def pedantic(benchmark: Any, step: Callable[..., Any], setup: Callable[[], Any] | None = None,
             rounds: int = ROUNDS) -> Any:
    """One step per round (a step changes the filter; `setup` restores it, untimed). The
    garbage collector is off while it runs, for ours and the floor alike: a collection
    set off by the set-up's allocations would otherwise land in some timed steps."""
    gc.collect()
    gc.disable()
    try:
        return benchmark.pedantic(step, setup=setup, rounds=rounds,
                                  warmup_rounds=rounds // 10)
    finally:
        gc.enable()


# -- predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["car", "vessel", "quadrotor"])
def test_ours_predict(benchmark, kind):
    c = case(kind)
    benchmark.group = f"{NAMES[kind]} predict"
    f, step = ours_predict(c)
    saved = f.save()
    pedantic(benchmark, step, setup=lambda: f.load(saved))
    assert f.time_s == c.t


@pytest.mark.parametrize("kind", ["car", "vessel", "quadrotor"])
def test_floor_predict(benchmark, kind):
    c = case(kind)
    benchmark.group = f"{NAMES[kind]} predict"
    out = pedantic(benchmark, floor_predict(c))
    f, step = ours_predict(c)
    step()
    assert_same(ours_state(kind, f), list(out))


# -- update --------------------------------------------------------------------------------------

UPDATE_CASES = [(kind, sensor) for kind, sensors in UPDATES.items() for sensor in sensors]


def ours_update(c: Case, sensor: str) -> tuple[Any, Any, Callable[[], Any]]:
    """The project filter predicted to c.t, its saved state, and its update by `sensor`
    (the ship's UKF updates from the sigma points that predict drew, which no update
    changes)."""
    f, step = ours_predict(c)
    step()
    return f, f.save(), functools.partial(f.update, c.next[sensor])


@pytest.mark.parametrize("kind, sensor", UPDATE_CASES)
def test_ours_update(benchmark, kind, sensor):
    c = case(kind)
    benchmark.group = f"{NAMES[kind]} update {sensor}"
    f, saved, step = ours_update(c, sensor)
    y, S = pedantic(benchmark, step, setup=lambda: f.load(saved))
    assert y @ np.linalg.solve(S, y) < 30  # a plausible innovation: the update was used


@pytest.mark.parametrize("kind, sensor", UPDATE_CASES)
def test_floor_update(benchmark, kind, sensor):
    c = case(kind)
    benchmark.group = f"{NAMES[kind]} update {sensor}"
    *state, y, S = pedantic(benchmark, floor_update(c, sensor))
    f, _, step = ours_update(c, sensor)
    ours_y, ours_S = step()
    if kind == "quadrotor":
        state = list(state[0])
    assert_same([*ours_state(kind, f)[:len(state)], ours_y, ours_S], [*state, y, S])


# -- the engine ----------------------------------------------------------------------------------

ENGINE_CASES = [("quadrotor", "imu"), ("quadrotor", "gnss"), ("car", "imu"), ("car", "gnss"),
                ("vessel", "speed_log"), ("vessel", "gnss")]


def filter_step(f: Any, m: Measurement) -> None:
    """What the engine asks of the filter for one in-order sample."""
    if m.sensor == f.driver:
        f.drive(m)
    else:
        f.predict(m.stamp_s)
        f.update(m)


@pytest.mark.parametrize("kind, sensor", ENGINE_CASES)
def test_engine_filter_step_alone(benchmark, kind, sensor):
    c = case(kind)
    benchmark.group = f"engine: {NAMES[kind]} {sensor}"
    f = c.filter()
    saved = f.save()
    pedantic(benchmark, functools.partial(filter_step, f, c.next[sensor]),
             setup=lambda: f.load(saved))


def engine_stream(benchmark: Any, c: Case, sensor: str, in_order: bool) -> Fusion:
    """Time Fusion.add of the next `sensor` reading, round after round, on one engine
    that the recording streams through: the readings in between are added untimed (so
    the timed call finds the caches as warm as the filter-alone step does). `in_order`
    stamps the reading just after the newest one the engine has seen, as if it had no
    latency; otherwise it keeps its own stamp (GNSS: 0.1 s before its delivery)."""
    fusion = copy.deepcopy(c.fusion)
    stream = iter(c.pending)

    def setup() -> tuple[tuple, dict]:
        for _, r in stream:
            if r.sensor == sensor:
                stamp = fusion.filter.time_s + 1e-6 if in_order else r.stamp_s
                return (fusion, sensor, stamp, r.values, c.R[sensor]), {}
            fusion.add(r.sensor, r.stamp_s, r.values, c.R[r.sensor])
        raise RuntimeError(f"the recording ran out of {sensor} readings")

    pedantic(benchmark, Fusion.add, setup=setup, rounds=ENGINE_ROUNDS)
    return fusion


def assert_used(fusion: Fusion, c: Case, sensor: str) -> None:
    """Nearly every timed reading went through the filter (rather than being dropped as
    late, or rejected: an in-order GNSS fix is 0.1 s old)."""
    if sensor != fusion.filter.driver:
        st, before = fusion.stats[sensor], c.fusion.stat(sensor)
        assert st.late == before.late
        assert st.rejected - before.rejected <= ENGINE_ROUNDS // 20


@pytest.mark.parametrize("kind, sensor", ENGINE_CASES)
def test_engine_fusion_add_in_order(benchmark, kind, sensor):
    c = case(kind)
    benchmark.group = f"engine: {NAMES[kind]} {sensor}"
    assert_used(engine_stream(benchmark, c, sensor, in_order=True), c, sensor)


@pytest.mark.parametrize("kind", ["quadrotor", "car", "vessel"])
def test_engine_fusion_add_gnss_as_delivered(benchmark, kind):
    """Each fix at its own stamp, delivered 0.1 s later: the engine inserts it before
    the newer readings (40 IMU samples of a drone or a car) and re-runs them."""
    c = case(kind)
    benchmark.group = f"engine: {NAMES[kind]} gnss"
    assert_used(engine_stream(benchmark, c, "gnss", in_order=False), c, "gnss")
