"""The simulator core (no bus): physics stepping, command handling, seeded sensors."""

from __future__ import annotations

import numpy as np
import pymap3d
import pytest

from fleetbus.sim_bridge.sensors import GnssModel, ImuModel, body_motion
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model
from fleetbus.sim_bridge.world import CommandRejected, World


def vehicle(kind, vid=None, start=None, **params):
    model = make_model(kind, params)
    return SimVehicle(vid or kind, kind, model, initial_state(kind, model, start or {}))


def fleet():
    return World([vehicle("quadrotor", start={"z": 10}), vehicle("vessel"), vehicle("car")])


def run(seed: int, steps: int = 300) -> np.ndarray:
    """States and sensor readings of a mixed fleet under constant commands."""
    world, rng = fleet(), np.random.default_rng(seed)
    imus = {vid: ImuModel() for vid in world.vehicles}
    gnss = GnssModel()
    out = []
    for _ in range(steps):
        world.command("quadrotor", [16.0, 0.1, 0.0, 0.05])
        world.command("vessel", [5.0, 0.1])
        world.command("car", [1.0, 0.2])
        world.step()
        for vid, v in world.vehicles.items():
            imu = imus[vid].measure(v, world.dt, rng)
            out.append(np.concatenate([v.state[:3], imu, gnss.geodetic(gnss.measure(v, rng))]))
    return np.array(out)


def test_same_seed_same_run_bit_for_bit_and_another_seed_differs():
    a, b, c = run(1), run(1), run(2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_time_is_counted_in_steps_not_summed():
    world = World([vehicle("car")], physics_dt_s=0.01)
    for _ in range(1000):
        world.step()
    assert world.time_s == 10.0


def test_a_stale_command_is_replaced_by_the_safe_one_and_counted():
    world = World([vehicle("quadrotor", start={"z": 10})], physics_dt_s=0.01,
                  command_timeout_s=0.2)
    world.command("quadrotor", [30.0, 0.0, 0.0, 0.0])  # full climb, then silence
    for _ in range(100):
        world.step()
    quad = world.vehicles["quadrotor"]
    assert quad.stale_steps == 100 - 21  # fresh for 0.2 s after the command
    assert abs(quad.state[5]) > 0  # it kept the climb speed it had; hover stops thrusting more
    vz_before = quad.state[5]
    for _ in range(100):
        world.step()
    assert quad.state[5] == pytest.approx(vz_before)  # hover thrust: no more acceleration


def test_a_failsafe_command_outranks_the_controller_until_it_goes_quiet():
    world = World([vehicle("car")], physics_dt_s=0.01, command_timeout_s=0.2)
    car = world.vehicles["car"]
    world.command("car", [1.0, 0.1])
    world.command("car", [-2.0, 0.0], override=True)
    world.command("car", [3.0, 0.3])  # the controller keeps talking: ignored
    assert car.command.tolist() == [-2.0, 0.0]
    assert car.overridden_commands == 1
    for _ in range(21):  # the failsafe falls silent: after the timeout the controller is back
        world.step()
    world.command("car", [3.0, 0.3])
    assert car.command.tolist() == [3.0, 0.3]
    assert car.overridden_commands == 1


def test_without_a_failsafe_an_endless_command_timeout_overrides_nothing():
    world = World([vehicle("car")], command_timeout_s=float("inf"))
    world.command("car", [1.0, 0.1])
    assert world.vehicles["car"].command.tolist() == [1.0, 0.1]


def test_the_car_brakes_to_a_stop_without_commands():
    world = World([vehicle("car")], physics_dt_s=0.01, command_timeout_s=0.1)
    world.vehicles["car"].state[3] = 10.0
    for _ in range(500):
        world.step()
    assert world.vehicles["car"].state[3] == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("vid, command, match", [
    ("ghost", [1.0, 0.0], "unknown vehicle 'ghost'"),
    ("car", [float("nan"), 0.0], "car: command"),
    ("car", [float("inf"), 0.0], "car: command"),
    ("car", [1.0], "car: command"),
])
def test_bad_commands_are_rejected_by_name_and_counted(vid, command, match):
    world = fleet()
    with pytest.raises(CommandRejected, match=match):
        world.command(vid, command)
    if vid == "car":
        assert world.vehicles["car"].rejected_commands == 1
    world.step()  # and the simulation carries on
    assert all(np.all(np.isfinite(v.state)) for v in world.vehicles.values())


def test_commands_are_clipped_to_the_vehicle_limits():
    world = fleet()
    world.command("car", [100.0, -5.0])
    car = world.vehicles["car"]
    assert car.command.tolist() == [car.model.max_accel_mps2, -car.model.max_steer_rad]


def test_impossible_vehicle_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="mass_kg"):
        make_model("vessel", {"mass_kg": -3.0})
    with pytest.raises(ValueError, match="wingspan"):
        make_model("quadrotor", {"wingspan": 2.0})
    with pytest.raises(ValueError, match="unknown vehicle type 'blimp'"):
        make_model("blimp")


@pytest.mark.parametrize("kind", ["quadrotor", "vessel", "car"])
def test_imu_at_rest_reads_gravity_up(kind):
    world = World([vehicle(kind, start={"z": 5})])
    v = world.vehicles[kind]
    world.command(kind, v.safe_command() if kind == "quadrotor" else np.zeros(2))
    world.step()
    force, rate = body_motion(v)
    np.testing.assert_allclose(force, [0, 0, 9.81], atol=1e-9)
    np.testing.assert_allclose(rate, 0, atol=1e-12)


def test_gnss_scatters_around_the_true_position():
    v = vehicle("car", start={"x": 100.0, "y": -50.0})
    gnss, rng = GnssModel(horizontal_sigma_m=1.0), np.random.default_rng(3)
    enu = np.array([pymap3d.geodetic2enu(*gnss.geodetic(gnss.measure(v, rng)),
                                         gnss.origin_lat_deg,
                                         gnss.origin_lon_deg, gnss.origin_alt_m)
                    for _ in range(400)])
    np.testing.assert_allclose(enu[:, :2].mean(axis=0), [100.0, -50.0], atol=0.2)
    assert 0.8 < enu[:, 0].std() < 1.2


def test_a_vessel_can_be_an_otter_and_an_unknown_hull_is_named():
    world = World([vehicle("vessel", hull="otter")])
    for _ in range(500):
        world.command("vessel", [100.0, 0.0])
        world.step()
    assert type(world.vehicles["vessel"].model).__name__ == "Otter"
    assert world.vehicles["vessel"].state[3] > 1.0  # under way
    with pytest.raises(ValueError, match="unknown hull 'raft'"):
        make_model("vessel", {"hull": "raft"})
