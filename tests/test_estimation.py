"""The estimators against the simulator's own vehicles and sensors (no bus): consistency
over many seeded runs, outliers, outages, re-initialisation, late measurements and bad
input."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2

from fleetbus.estimation import FILTERS, Fusion, MeasurementError, SensorConfig
from fleetbus.estimation.imu import ImuAverager
from fleetbus.sim_bridge import offline
from fleetbus.sim_bridge.sensing import SensorSettings, SensorSuite
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model

USED = {"quadrotor": {"imu", "gnss", "heading", "baro"},
        "car": {"imu", "gnss", "heading", "wheel_speed"},
        "vessel": {"gnss", "heading", "speed_log"}}
START = {"quadrotor": {"z": 10.0}, "car": {}, "vessel": {}}


def control(kind: str) -> Callable[[float, SimVehicle], list[float]]:
    """Gentle manoeuvres that exercise every state."""
    if kind == "car":
        return lambda t, v: [0.5 if t < 10 else 0.0, 0.15 * math.sin(0.3 * t)]
    if kind == "vessel":
        return lambda t, v: [4.0, 0.2 * math.sin(0.2 * t)]
    return lambda t, v: [v.model.hover_thrust_n * (1.02 if t < 5 else 1.0),
                         0.05 * math.sin(0.5 * t), 0.05 * math.cos(0.4 * t), 0.1]


def truth(kind: str, state: np.ndarray) -> np.ndarray:
    """The true values of what `navigation()` estimates."""
    if kind == "quadrotor":
        return state[:6].copy()  # position, velocity
    return state[:4].copy() if kind == "car" else state[:6].copy()


def readings(kind: str, seed: int, seconds: float, imu_hz: float = 100.0
             ) -> Iterator[tuple[float, object, list]]:
    """(delivery time, true vehicle, readings delivered then), GNSS arriving late as the
    simulator sends it; the IMU samples once per physics step, at `imu_hz`."""
    pending: list = []
    count = 0
    for step in offline.run(kind, seconds, seed, control(kind), start=START[kind],
                            settings=SensorSettings(imu_rate_hz=imu_hz),
                            physics_rate_hz=max(100.0, imu_hz)):
        for deliver, r in step.readings:
            if r.sensor in USED[kind]:
                heapq.heappush(pending, (deliver, count, r))
                count += 1
        due = []
        while pending and pending[0][0] <= step.time_s + 1e-9:
            due.append(heapq.heappop(pending)[2])
        yield step.time_s, step.vehicle, due


def variances(kind: str) -> dict[str, np.ndarray]:
    model = make_model(kind)
    vehicle = SimVehicle(kind, kind, model, initial_state(kind, model, {}))
    return {s.name: np.diag(s.variance) for s in SensorSuite(vehicle, 0.01).sensors}


def run_filter(kind: str, seed: int, seconds: float = 30.0,
               tamper: Callable[[float, list[float]], list[float] | None] | None = None,
               sensors: dict[str, SensorConfig] | None = None, imu_hz: float = 100.0,
               imu_period_s: float = 0.0,
               silence: tuple[float, float] | None = None) -> dict[str, Any]:
    """Feed one seeded run to a fresh filter; sample NEES and errors every 0.2 s. IMU
    samples are averaged over `imu_period_s` first, as the fusion node does; `silence`
    (start, end) drops every reading stamped in it (a link loss)."""
    R = variances(kind)
    fusion = Fusion(FILTERS[kind](), sensors)
    averager = ImuAverager(imu_period_s)
    out: dict[str, Any] = {"t": [], "nees": [], "pos_err": [], "gnss_err": [], "trace": []}
    for t, vehicle, due in readings(kind, seed, seconds, imu_hz):
        for r in due:
            if silence is not None and silence[0] <= r.stamp_s < silence[1]:
                continue
            values = r.values
            if tamper is not None and r.sensor == "gnss":
                values = tamper(r.stamp_s, values)
                if values is None:
                    continue
                out["gnss_err"].append(math.dist(values[:2], vehicle.state[:2]))
            stamp, cov = r.stamp_s, R[r.sensor]
            if r.sensor == "imu":
                averaged = averager.add(stamp, values, cov)
                if averaged is None:
                    continue
                stamp, values, cov = averaged
            fusion.add(r.sensor, stamp, values, cov)
        if fusion.ready and t > 5.0 and round(t * 100) % 20 == 0:
            est = fusion.estimate_at(t)
            x, P = fusion.filter.navigation()
            # navigation() is at the filter's time; compare at the same time as the truth
            if abs(fusion.filter.time_s - t) > 1e-9:
                continue
            e = x - truth(kind, vehicle.state)
            if kind != "quadrotor":
                e[2] = math.remainder(e[2], math.tau)
            out["dof"] = len(e)
            out["t"].append(t)
            out["nees"].append(float(e @ np.linalg.solve(P, e)))
            out["pos_err"].append(math.dist(est.position[:2], vehicle.state[:2]))
            out["trace"].append(float(np.trace(P[:2, :2])))
    out["fusion"] = [fusion]
    return out


def _mc(args: tuple) -> tuple[float, float, int]:
    kind, seed, *imu = args  # imu: (rate Hz, averaging period s), if not the default
    out = run_filter(kind, seed, 20.0, *((None, None, *imu) if imu else ()))
    return (float(np.mean(out["nees"])), float(np.sqrt(np.mean(np.square(out["pos_err"])))),
            out["dof"])


@pytest.mark.parametrize("kind", ["quadrotor", "car", "vessel"])
def test_monte_carlo_nees_is_consistent_and_beats_raw_gnss(kind):
    runs = 50
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_mc, [(kind, seed) for seed in range(runs)]))
    dof = results[0][2]
    average = float(np.mean([r[0] for r in results]))
    low, high = (chi2.ppf(p, runs * dof) / runs for p in (0.025, 0.975))
    rmse = float(np.sqrt(np.mean([r[1] ** 2 for r in results])))
    raw = math.sqrt(2) * 1.0  # horizontal RMSE of the simulated GNSS (1 m per axis)
    print(f"\n{kind}: average NEES {average:.2f} over {runs} runs (95 % bounds "
          f"{low:.2f}-{high:.2f}, {dof} states); position RMSE {rmse:.3f} m vs raw GNSS "
          f"{raw:.2f} m ({raw / rmse:.1f}x better)")
    assert low <= average <= high
    assert rmse * 2 <= raw


def test_a_drone_imu_averaged_from_400_to_100_hz_stays_consistent():
    """What the fusion node does by default (it cuts its CPU by ~40 %): the averages are
    exact means of the samples, with covariance R/4, so NEES must stay in its bounds."""
    runs = 30
    with ProcessPoolExecutor(2) as pool:
        results = list(pool.map(_mc, [("quadrotor", seed, 400.0, 0.01) for seed in range(runs)]))
    dof = results[0][2]
    average = float(np.mean([r[0] for r in results]))
    low, high = (chi2.ppf(p, runs * dof) / runs for p in (0.025, 0.975))
    rmse = float(np.sqrt(np.mean([r[1] ** 2 for r in results])))
    print(f"\nquadrotor, 400 Hz IMU averaged to 100 Hz: average NEES {average:.2f} over "
          f"{runs} runs (95 % bounds {low:.2f}-{high:.2f}); position RMSE {rmse:.3f} m")
    assert low <= average <= high
    assert rmse * 2 <= math.sqrt(2) * 1.0


def test_the_imu_averager_gives_exact_interval_means_and_lets_odd_samples_through():
    avg = ImuAverager(0.01)
    R = np.eye(6) * 0.04
    assert avg.add(0.0, np.zeros(6), R)[0] == 0.0  # the first: nothing to average with
    assert avg.add(0.0025, np.full(6, 1.0), R) is None
    assert avg.add(0.0050, np.full(6, 2.0), R) is None
    assert avg.add(0.0075, np.full(6, 3.0), R) is None
    stamp, z, cov = avg.add(0.0100, np.full(6, 6.0), R)
    assert stamp == 0.01 and np.allclose(z, 3.0) and np.allclose(cov, R / 4)
    nan = avg.add(0.0125, np.full(6, np.nan), R)  # passed on whole, for the engine to count
    assert np.isnan(nan[1]).all()
    late = avg.add(0.005, np.ones(6), R)  # out of order: alone, the engine places it
    assert late[0] == 0.005 and np.allclose(late[2], R)
    assert ImuAverager(0.0).add(1.0, np.ones(6), R)[0] == 1.0  # period 0: every sample
    with pytest.raises(ValueError, match="period"):
        ImuAverager(-1.0)


def test_a_50_m_gnss_jump_is_rejected():
    out = run_filter("car", 3, tamper=lambda t, v: [v[0] + 50.0, *v[1:]] if 12.0 <= t < 12.1
                     else v)
    gnss = out["fusion"][0].stats["gnss"]
    assert gnss.rejected >= 1 and gnss.reinitialised == 0
    assert max(out["pos_err"]) < 2.0  # the estimate never followed the jump


@pytest.mark.parametrize("kind", ["quadrotor", "car"])
def test_a_gnss_outage_grows_the_covariance_and_recovers_within_2_s(kind):
    out = run_filter(kind, 4, tamper=lambda t, v: None if 10.0 <= t < 15.0 else v)
    t, trace, err = (np.array(out[k]) for k in ("t", "trace", "pos_err"))
    before = trace[(t > 9.5) & (t < 10)].max()
    during = trace[(t > 10) & (t < 15)]
    assert np.all(np.diff(during) > 0) and during[-1] > before  # it knows it is less sure
    after = (t >= 17.0) & (t < 20.0)  # from 2 s after GNSS returned
    assert np.all(err[after] <= 3 * np.sqrt(trace[after]))  # consistent again
    assert trace[after].max() < 1.5 * before
    print(f"\n{kind}: position error {err[t < 15].max():.2f} m at the end of the outage, "
          f"{err[after].max():.2f} m from 2 s after")


def test_a_drone_rides_out_a_link_loss_of_every_sensor():
    """No IMU, GNSS, heading or barometer for 2 s while the drone manoeuvres: the filter
    must take the gap for what it is (the held IMU sample says nothing about it), not
    read the corrections afterwards as sensor biases and drift off."""
    out = run_filter("quadrotor", 3, imu_period_s=0.01, silence=(10.0, 12.0))
    t, trace, err = (np.array(out[k]) for k in ("t", "trace", "pos_err"))
    after = t >= 14.0  # from 2 s after the link came back
    assert np.all(err[after] <= 3 * np.sqrt(trace[after]))  # it knows how sure it is
    assert err[after].max() < 2.5 and err[t >= 17.0].max() < 1.5  # and converges again
    stats = out["fusion"][0].stats
    assert all(st.reinitialised == 0 for st in stats.values())


def test_a_permanent_gnss_offset_leads_to_reinitialisation():
    out = run_filter("car", 5, tamper=lambda t, v: [v[0] + 30.0, *v[1:]] if t >= 12.0 else v,
                     sensors={"gnss": SensorConfig(reinit_after=5)})
    gnss = out["fusion"][0].stats["gnss"]
    assert gnss.reinitialised >= 1
    t, err = np.array(out["t"]), np.array(out["pos_err"])
    # it now follows the (offset) sensor instead of rejecting it forever
    assert abs(err[t > 20].mean() - 30.0) < 3.0


@pytest.mark.parametrize("kind", ["quadrotor", "car", "vessel"])
def test_shuffled_within_the_history_window_gives_the_same_estimate(kind):
    R = variances(kind)
    stream = [r for _, _, due in readings(kind, 6, 8.0) for r in due]
    in_order, shuffled = Fusion(FILTERS[kind](), history_s=0.5), Fusion(FILTERS[kind](),
                                                                          history_s=0.5)
    for r in stream:
        in_order.add(r.sensor, r.stamp_s, r.values, R[r.sensor])
    rng = np.random.default_rng(0)
    start = next(i for i, r in enumerate(stream) if r.stamp_s >= 2.0)  # both started alike
    # then displace each reading by up to 0.3 s (less than the window) in arrival order
    later = sorted(stream[start:], key=lambda r: r.stamp_s + rng.uniform(0, 0.3))
    for r in stream[:start] + later:
        shuffled.add(r.sensor, r.stamp_s, r.values, R[r.sensor])
    assert sum(s.late for s in shuffled.stats.values()) == 0
    a, b = in_order.filter.navigation(), shuffled.filter.navigation()
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    np.testing.assert_allclose(a[1], b[1], atol=1e-8)


def test_measurements_older_than_the_window_are_counted_and_dropped():
    R = variances("car")
    fusion = Fusion(FILTERS["car"](), history_s=0.5)
    stream = [r for _, _, due in readings("car", 7, 5.0) for r in due]
    for r in stream:
        fusion.add(r.sensor, r.stamp_s, r.values, R[r.sensor])
    before = fusion.filter.navigation()
    fusion.add("gnss", stream[-1].stamp_s - 2.0, [100.0, 100.0, 0.0], R["gnss"])
    assert fusion.stats["gnss"].late == 1
    np.testing.assert_array_equal(before[0], fusion.filter.navigation()[0])


@pytest.mark.parametrize("z, R, match", [
    ([math.nan, 0.0, 0.0], np.eye(3), "not finite"),
    ([math.inf, 0.0, 0.0], np.eye(3), "not finite"),
    ([0.0, 0.0, 0.0], np.zeros((3, 3)), "not positive definite"),
    ([0.0, 0.0, 0.0], -np.eye(3), "not positive definite"),
    ([0.0, 0.0, 0.0], [[1, 2, 0], [0, 1, 0], [0, 0, 1]], "not positive definite"),
    ([0.0, 0.0], np.eye(3), "does not fit"),
])
def test_bad_measurements_are_rejected_counted_and_never_reach_the_filter(z, R, match):
    Rs = variances("car")
    fusion = Fusion(FILTERS["car"]())
    for r in [r for _, _, due in readings("car", 8, 3.0) for r in due]:
        fusion.add(r.sensor, r.stamp_s, r.values, Rs[r.sensor])
    before = fusion.filter.save()
    with pytest.raises(MeasurementError, match=f"gnss: .*{match}"):
        fusion.add("gnss", fusion.filter.time_s, z, R)
    assert fusion.stats["gnss"].invalid == 1
    after = fusion.filter.save()
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_not_ready_until_gnss_and_heading():
    fusion = Fusion(FILTERS["vessel"]())
    fusion.add("speed_log", 0.1, [1.0, 0.0], np.eye(2) * 0.01)
    fusion.add("gnss", 0.2, [5.0, 6.0, 0.0], np.eye(3))
    assert not fusion.ready
    fusion.add("heading", 0.3, [0.5], [[1e-4]])
    assert fusion.ready
    x, _ = fusion.filter.navigation()
    np.testing.assert_allclose(x[:3], [5.0, 6.0, 0.5])
