"""Fault plans (no bus): parsing and checking a plan, applying it to readings, its events."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

from fleetbus.sim_bridge.faults import (
    PX4_NAMES,
    SENSORS,
    DelayLine,
    Fault,
    FaultInjector,
    FaultPlanError,
    load_plan,
)

VEHICLES = {"drone1": "quadrotor", "ship1": "vessel", "car1": "car"}
PARAMS = {"delay_s": 0.25, "sigma": 0.5, "offset": 1.0, "rate_hz": 5, "probability": 0.5}
REQUIRED = {"delay": "delay_s", "noise": "sigma", "bias": "offset", "glitch": "offset",
            "rate": "rate_hz", "intermittent": "probability"}


def entry(type_="dropout", target="drone1/gnss", at=0, **fields):
    out = {"at": at, "target": target, "type": type_, **fields}
    kind = PX4_NAMES.get(type_, type_)
    if kind in REQUIRED and REQUIRED[kind] not in fields:
        out[REQUIRED[kind]] = PARAMS[REQUIRED[kind]]
    return out


def injector(*entries, seed=0, vehicles=VEHICLES):
    return FaultInjector(load_plan(list(entries), vehicles), np.random.default_rng(seed))


def times(n, hz=10):
    """Simulation times 0, 1/hz, ... computed exactly (i / hz, not summed)."""
    return [i / hz for i in range(n)]


def reading(t):
    """A GNSS reading that changes with time, so a repeated one can be told apart."""
    return [t, -2.0 * t, 10.0 + t]


def stream(inj, n=50, hz=10, vehicle="drone1", sensor="gnss"):
    return [(t, inj.apply(vehicle, sensor, t, reading(t))) for t in times(n, hz)]


def brief(faults):
    return [(f.index, f.type, f.name, f.vehicle, f.sensor, f.start_s, f.end_s) for f in faults]


# --- load_plan: accepted forms ----------------------------------------------------------

PLAN_YAML = """\
- {at: 10, for: 5, target: drone1/gnss, type: dropout}
- {at: 12, target: ship1/imu, type: garbage, sigma: 0.5}
- {at: 20, for: 3, target: car1, type: link_loss}
"""
PLAN_LIST = [
    {"at": 10, "for": 5, "target": "drone1/gnss", "type": "dropout"},
    {"at": 12, "target": "ship1/imu", "type": "garbage", "sigma": 0.5},
    {"at": 20, "for": 3, "target": "car1", "type": "link_loss"},
]
PLAN_BRIEF = [
    (0, "dropout", "dropout", "drone1", "gnss", 10.0, 15.0),
    (1, "noise", "garbage", "ship1", "imu", 12.0, math.inf),
    (2, "link_loss", "link_loss", "car1", None, 20.0, 23.0),
]


@pytest.mark.parametrize("form", ["list", "yaml", "file", "faults_mapping", "faults_file"])
def test_a_list_yaml_text_a_file_and_a_faults_mapping_give_the_same_plan(form, tmp_path):
    mapping = "faults:\n" + "".join(f"  {line}\n" for line in PLAN_YAML.splitlines())
    if form == "list":
        source = PLAN_LIST
    elif form == "yaml":
        source = PLAN_YAML
    elif form == "faults_mapping":
        source = mapping
    else:
        source = tmp_path / "plan.yaml"
        source.write_text(PLAN_YAML if form == "file" else mapping)
    faults = load_plan(source, VEHICLES)
    assert brief(faults) == PLAN_BRIEF
    assert all(isinstance(f, Fault) for f in faults)
    assert faults[1].sigma == 0.5


@pytest.mark.parametrize("text", ["", "   \n", "# nothing planned yet\n", "~", "null",
                                  "faults:", "faults: []", "[]"])
def test_an_empty_plan_has_no_faults(text, tmp_path):
    assert load_plan(text, VEHICLES) == []
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert load_plan(path, VEHICLES) == []


def test_an_empty_parsed_list_has_no_faults():
    assert load_plan([], VEHICLES) == []
    assert FaultInjector([], np.random.default_rng(0)).summary() == []


def test_a_star_target_expands_to_every_vehicle_in_order():
    faults = load_plan([entry("noise", "*/imu", at=12)], VEHICLES)
    assert [(f.vehicle, f.sensor, f.index, f.sigma) for f in faults] == [
        ("drone1", "imu", 0, 0.5), ("ship1", "imu", 0, 0.5), ("car1", "imu", 0, 0.5)]


def test_a_star_link_loss_cuts_every_vehicle():
    faults = load_plan([entry("link_loss", "*", at=3, **{"for": 1})], VEHICLES)
    assert [(f.vehicle, f.sensor, f.target) for f in faults] == [
        ("drone1", None, "drone1"), ("ship1", None, "ship1"), ("car1", None, "car1")]
    inj = FaultInjector(faults, np.random.default_rng(0))
    assert all(inj.link_lost(v, 3.5) is not None for v in VEHICLES)


def test_a_star_bias_gets_one_offset_per_vehicle_sensor_shape():
    faults = load_plan([entry("bias", "*/gnss", offset=[1, 2, 3])], VEHICLES)
    assert len(faults) == 3
    for fault in faults:
        assert fault.offset.tolist() == [1.0, 2.0, 3.0]


def test_a_star_target_on_a_sensor_only_some_vehicles_have_is_an_error():
    with pytest.raises(FaultPlanError, match="ship1 has no sensor 'baro'"):
        load_plan([entry(target="*/baro")], VEHICLES)
    drones = {"a": "quadrotor", "b": "quadrotor"}
    assert [f.vehicle for f in load_plan([entry(target="*/baro")], drones)] == ["a", "b"]


@pytest.mark.parametrize("px4, canonical", sorted(PX4_NAMES.items()))
def test_px4_names_translate_to_the_canonical_type_and_keep_their_name(px4, canonical):
    (fault,) = load_plan([entry(px4, at=1)], VEHICLES)
    assert (fault.type, fault.name) == (canonical, px4)
    row = FaultInjector([fault], np.random.default_rng(0)).summary()[0]
    assert row["type"] == px4  # the summary speaks the plan's language


@pytest.mark.parametrize("px4, canonical", sorted(PX4_NAMES.items()))
def test_px4_names_quoted_in_yaml_translate(px4, canonical):
    param = REQUIRED.get(canonical)
    extra = f", {param}: {PARAMS[param]}" if param else ""
    (fault,) = load_plan(f'- {{at: 1, target: drone1/gnss, type: "{px4}"{extra}}}', VEHICLES)
    assert (fault.type, fault.name) == (canonical, px4)


def test_the_px4_name_off_written_unquoted_in_yaml_is_a_dropout():
    (fault,) = load_plan("- {at: 1, for: 2, target: drone1/gnss, type: off}", VEHICLES)
    assert (fault.type, fault.name) == ("dropout", "off")


@pytest.mark.parametrize("kind", ["dropout", "delay", "noise", "bias", "stuck", "glitch",
                                  "rate", "intermittent"])
def test_canonical_names_keep_their_own_name(kind):
    (fault,) = load_plan([entry(kind)], VEHICLES)
    assert fault.type == fault.name == kind


def test_without_for_a_fault_lasts_to_the_end_of_the_run():
    open_ended, bounded, instant = load_plan(
        [entry(at=4), entry(at=4, **{"for": 2.5}), entry(at=7, **{"for": 0})], VEHICLES)
    assert open_ended.end_s == math.inf
    assert open_ended.active(1e9) and not open_ended.active(3.999)
    assert bounded.end_s == 6.5
    assert [bounded.active(t) for t in (3.99, 4.0, 6.49, 6.5)] == [False, True, True, False]
    assert not instant.active(7.0)  # zero length: never active


def test_parameters_are_parsed_to_floats_and_offsets_to_one_value_per_component():
    delay, noise, rate, inter, bias_scalar, bias_vector, glitch = load_plan([
        entry("delay", delay_s=1), entry("noise", sigma=2), entry("rate", rate_hz=4),
        entry("intermittent", probability=1), entry("bias", "drone1/imu", offset=2),
        entry("wrong", "ship1/speed_log", offset=[0.5, -1]),
        entry("glitch", "car1/wheel_speed", offset=[3]),
    ], VEHICLES)
    assert (delay.delay_s, noise.sigma, rate.rate_hz, inter.probability) == (1.0, 2.0, 4.0, 1.0)
    assert all(type(x) is float for x in (delay.delay_s, noise.sigma, rate.rate_hz,
                                          inter.probability, delay.start_s))
    assert bias_scalar.offset.tolist() == [2.0] * SENSORS["quadrotor"]["imu"]
    assert bias_vector.offset.tolist() == [0.5, -1.0]
    assert glitch.offset.tolist() == [3.0]


def test_zero_is_allowed_where_it_makes_sense():
    faults = load_plan([entry("delay", delay_s=0), entry("noise", sigma=0),
                        entry("intermittent", probability=0), entry(**{"for": 0})], VEHICLES)
    assert len(faults) == 4


# --- load_plan: errors name the offending thing -----------------------------------------

@pytest.mark.parametrize("bad, match", [
    (entry(target="boat9/gnss"), r"no vehicle 'boat9' \(vehicles: drone1, ship1, car1\)"),
    (entry(target="boat9"), r"no vehicle 'boat9'"),
    (entry(target="car1/baro"),
     r"car1 has no sensor 'baro' \(has imu, gnss, heading, wheel_speed\)"),
    (entry(target="drone1/speed_log"),
     r"drone1 has no sensor 'speed_log' \(has imu, gnss, heading, baro\)"),
    (entry(target="ship1/wheel_speed"), r"ship1 has no sensor 'wheel_speed'"),
    (entry(target="drone1"), r"drone1 has no sensor ''"),
    (entry(target="drone1/gnss/x"), r"drone1 has no sensor 'gnss/x'"),
    (entry(target=""), r"needs a target"),
    (entry(target=7), r"needs a target"),
    ({"at": 0, "type": "dropout"}, r"entry 0 \(dropout\): needs a target"),
    (entry("explode"), r"unknown type 'explode' \(known: dropout, delay, noise, bias, stuck, "
                       r"glitch, rate, intermittent, link_loss; PX4 names: off, delayed, "
                       r"garbage, wrong, stuck, slow, intermittent\)"),
    (entry("Dropout"), r"unknown type 'Dropout'"),
    ({"at": 0, "target": "drone1/gnss"}, r"unknown type None"),
    (entry(durration=3), r"entry 0: unknown field\(s\) \['durration'\]"),
    (entry(target="drone1/gnss", foo=1, bar=2), r"unknown field\(s\) \['bar', 'foo'\]"),
    ("drone1/gnss dropout", r"entry 0: expected a mapping, got 'drone1/gnss dropout'"),
    (["at", 0], r"entry 0: expected a mapping"),
    (entry(at=-1), r"entry 0 \(dropout\): 'at' must be >= 0.0, got -1"),
    (entry(at=math.nan), r"'at' must be a finite number, got nan"),
    (entry(at=math.inf), r"'at' must be a finite number, got inf"),
    (entry(at=True), r"'at' must be a finite number, got True"),
    (entry(at="10"), r"'at' must be a finite number, got '10'"),
    (entry(at=None), r"'at' must be a finite number, got None"),
    (entry(**{"for": -2}), r"'for' must be >= 0.0, got -2"),
    (entry(**{"for": math.nan}), r"'for' must be a finite number"),
    (entry(**{"for": "5s"}), r"'for' must be a finite number, got '5s'"),
    (entry("noise", sigma=-0.1), r"'sigma' must be >= 0.0, got -0.1"),
    (entry("garbage", sigma=False), r"entry 0 \(garbage\): 'sigma' must be a finite number"),
    (entry("delay", delay_s=-1), r"'delay_s' must be >= 0.0"),
    (entry("delayed", delay_s="2"), r"entry 0 \(delayed\): 'delay_s' must be a finite number"),
    (entry("intermittent", probability=1.5), r"probability must be at most 1"),
    (entry("intermittent", probability=-0.1), r"'probability' must be >= 0.0"),
    (entry("intermittent", probability=math.nan), r"'probability' must be a finite number"),
    (entry("rate", rate_hz=0), r"'rate_hz' must be > 0.0, got 0"),
    (entry("slow", rate_hz=-5), r"entry 0 \(slow\): 'rate_hz' must be > 0.0, got -5"),
    (entry("bias", offset=[1, 2]), r"'offset' must be a finite number or a list of 3, "
                                   r"got \[1, 2\]"),
    (entry("bias", "drone1/imu", offset=[1, 2, 3]), r"a list of 6, got \[1, 2, 3\]"),
    (entry("bias", "drone1/baro", offset=[1, 2]), r"a list of 1, got \[1, 2\]"),
    (entry("bias", offset=[]), r"a list of 3, got \[\]"),
    (entry("wrong", offset="1"), r"entry 0 \(wrong\): 'offset' must be a finite number"),
    (entry("bias", offset=True), r"'offset' must be a finite number"),
    (entry("bias", offset=[1, math.nan, 3]), r"'offset' must be a finite number"),
    (entry("glitch", offset=[1, math.inf, 3]), r"entry 0 \(glitch\): 'offset' must be"),
    (entry("glitch", offset=None), r"'offset' must be a finite number"),
    (entry("link_loss", "drone1/gnss"),
     r"link_loss targets a whole vehicle, not 'drone1/gnss'"),
    (entry("link_loss", "*/imu"), r"link_loss targets a whole vehicle, not '\*/imu'"),
])
def test_a_bad_entry_is_rejected_with_a_message_naming_what_is_wrong(bad, match):
    with pytest.raises(FaultPlanError, match=match):
        load_plan([bad], VEHICLES)


@pytest.mark.parametrize("kind, param", sorted(REQUIRED.items()))
def test_a_missing_required_parameter_is_named(kind, param):
    bad = {"at": 0, "target": "drone1/gnss", "type": kind}
    with pytest.raises(FaultPlanError, match=rf"entry 0 \({kind}\): needs '{param}'"):
        load_plan([bad], VEHICLES)


def test_the_error_names_the_index_of_the_bad_entry():
    plan = [entry(), entry("noise"), entry(target="drone1/sonar")]
    with pytest.raises(FaultPlanError, match=r"^fault plan entry 2 \(dropout\): drone1 has no"):
        load_plan(plan, VEHICLES)


def test_a_bad_entry_after_a_star_names_the_vehicle_it_failed_on():
    with pytest.raises(FaultPlanError, match=r"entry 1 \(bias\): .*'offset'.*list of 6"):
        load_plan([entry(), entry("bias", "*/imu", offset=[1, 2, 3])], VEHICLES)


def test_an_entry_without_at_is_a_plan_error():
    with pytest.raises(FaultPlanError, match=r"entry 0 \(dropout\): .*'at'"):
        load_plan([{"target": "drone1/gnss", "type": "dropout"}], VEHICLES)


def test_a_type_that_is_a_list_is_a_plan_error():
    with pytest.raises(FaultPlanError, match=r"entry 0: unknown type \[False\]"):
        load_plan("- {at: 0, target: drone1/gnss, type: [off]}", VEHICLES)


@pytest.mark.parametrize("source, match", [
    ("just some words", r"a fault plan is a list of faults, not str"),
    ("x: 1", r"a fault plan is a list of faults, not dict"),
    ("42", r"a fault plan is a list of faults, not int"),
    ("faults: 3", r"a fault plan is a list of faults, not int"),
    ({"at": 0}, r"a fault plan is a list of faults, not dict"),
    ("- {at: 0, target: drone1/gnss", r"fault plan is not valid YAML"),
    ("- [unclosed", r"fault plan is not valid YAML"),
    ("- {at: 0, target: drone1/gnss, type: dropout, for: -1}", r"entry 0 \(dropout\): 'for'"),
])
def test_a_plan_that_is_not_a_list_of_faults_is_rejected(source, match):
    with pytest.raises(FaultPlanError, match=match):
        load_plan(source, VEHICLES)


def test_a_missing_file_is_named_in_the_error(tmp_path):
    path = tmp_path / "no_such_plan.yaml"
    with pytest.raises(FaultPlanError, match=re.escape(f"fault plan {path}: ") + "No such file"):
        load_plan(path, VEHICLES)


def test_an_error_inside_a_file_names_the_file_and_the_entry(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("- {at: 1, target: drone1/gnss, type: dropout}\n"
                    "- {at: 2, target: car1/baro, type: 'off'}\n")
    with pytest.raises(FaultPlanError) as info:
        load_plan(path, VEHICLES)
    message = str(info.value)
    assert message.startswith(f"{path}: fault plan entry 1 (off): car1 has no sensor 'baro'")
    assert "has imu, gnss, heading, wheel_speed" in message


def test_invalid_yaml_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- {at: 1, target: [\n")
    with pytest.raises(FaultPlanError, match=re.escape(str(path)) + ": fault plan is not valid"):
        load_plan(path, VEHICLES)


def test_a_plan_error_is_a_value_error():
    assert issubclass(FaultPlanError, ValueError)
    with pytest.raises(ValueError, match="unknown type"):
        load_plan([entry("nope")], VEHICLES)


# --- FaultInjector.apply ----------------------------------------------------------------

def test_without_faults_readings_pass_unchanged_and_undelayed():
    inj = injector()
    for t in times(30):
        for vehicle, kind in VEHICLES.items():
            for sensor, n in SENSORS[kind].items():
                values = [float(i) + t for i in range(n)]
                assert inj.apply(vehicle, sensor, t, values) == (values, 0.0)


def test_a_dropout_loses_readings_only_within_its_window():
    inj = injector(entry(at=1, **{"for": 2}))
    out = stream(inj)
    lost = [t for t, o in out if o is None]
    assert lost == [t for t in times(50) if 1.0 <= t < 3.0]
    assert len(lost) == 20
    assert all(o == (reading(t), 0.0) for t, o in out if not 1.0 <= t < 3.0)
    assert inj.faults[0].affected == 20


def test_an_open_ended_dropout_never_lets_a_reading_through_again():
    inj = injector(entry("off", at=2))
    out = stream(inj, n=100)
    assert [t for t, o in out if o is not None] == times(20)


def test_a_delay_delays_readings_in_its_window_without_changing_them():
    inj = injector(entry("delay", at=1, delay_s=0.25, **{"for": 1}))
    for t, out in stream(inj, n=30):
        assert out == (reading(t), 0.25 if 1.0 <= t < 2.0 else 0.0)
    assert inj.faults[0].affected == 10


def test_noise_changes_every_value_in_its_window_only():
    inj = injector(entry("noise", at=1, sigma=0.5, **{"for": 2}))
    for t, (values, delay) in stream(inj):
        assert delay == 0.0
        if 1.0 <= t < 3.0:
            assert all(v != r for v, r in zip(values, reading(t), strict=True))
        else:
            assert values == reading(t)
    assert inj.faults[0].affected == 20


def test_noise_has_the_planned_spread():
    inj = injector(entry("noise", "drone1/imu", sigma=0.5))
    errors = np.array([inj.apply("drone1", "imu", t, [0.0] * 6)[0] for t in times(2000)])
    assert errors.shape == (2000, 6)
    assert abs(errors.mean()) < 0.03
    assert errors.std() == pytest.approx(0.5, rel=0.05)


def noisy_values(seed):
    inj = injector(entry("noise", "*/imu", sigma=0.5), entry("garbage", "ship1/gnss", sigma=2),
                   seed=seed)
    return [inj.apply(v, s, t, [1.0] * SENSORS[VEHICLES[v]][s])
            for t in times(50) for v, s in (("drone1", "imu"), ("ship1", "gnss"))]


def test_noise_is_reproducible_under_a_seed_and_another_seed_differs():
    assert noisy_values(7) == noisy_values(7)
    assert noisy_values(7) != noisy_values(8)


def test_a_scalar_bias_is_added_to_every_component():
    inj = injector(entry("bias", at=1, offset=2, **{"for": 1}))
    for t, (values, delay) in stream(inj, n=30):
        expected = [r + 2.0 for r in reading(t)] if 1.0 <= t < 2.0 else reading(t)
        assert values == pytest.approx(expected)
        assert delay == 0.0
    assert inj.faults[0].affected == 10


def test_a_per_component_bias_adds_each_offset_to_its_component():
    offset = [0.1, -0.2, 0.3, 1.0, -2.0, 3.0]
    inj = injector(entry("wrong", "drone1/imu", offset=offset))
    values, _ = inj.apply("drone1", "imu", 0.5, [10.0] * 6)
    assert values == pytest.approx([10.0 + o for o in offset])


def test_stuck_repeats_the_first_reading_of_its_window_then_lets_readings_through():
    inj = injector(entry("stuck", at=1, **{"for": 1.5}))
    for t, (values, delay) in stream(inj):
        assert values == (reading(1.0) if 1.0 <= t < 2.5 else reading(t))
        assert delay == 0.0
    assert inj.faults[0].affected == 15
    assert inj.faults[0].held == reading(1.0)


def test_stuck_holds_a_copy_not_the_callers_list():
    inj = injector(entry("stuck"))
    first = [1.0, 2.0, 3.0]
    out, _ = inj.apply("drone1", "gnss", 0.0, first)
    first[0] = 99.0
    out[1] = 99.0
    assert inj.apply("drone1", "gnss", 0.1, [4.0, 5.0, 6.0]) == ([1.0, 2.0, 3.0], 0.0)


def test_a_glitch_changes_exactly_one_reading_the_first_of_its_window():
    inj = injector(entry("glitch", at=1.5, offset=[100, 0, -100]))
    out = stream(inj)
    changed = [(t, values) for t, (values, _) in out if values != reading(t)]
    assert len(changed) == 1
    t, values = changed[0]
    assert t == 1.5
    assert values == pytest.approx([r + o for r, o in zip(reading(t), [100, 0, -100],
                                                          strict=True)])
    assert inj.faults[0].affected == 1


def test_a_glitch_before_its_time_changes_nothing():
    inj = injector(entry("glitch", at=100, offset=5))
    assert all(values == reading(t) for t, (values, _) in stream(inj))
    assert inj.faults[0].affected == 0


def test_a_rate_fault_lets_at_most_rate_hz_readings_through_each_second():
    inj = injector(entry("slow", at=0.5, rate_hz=5, **{"for": 2}))
    out = stream(inj, n=300, hz=100)  # 100 Hz for 3 s
    passed = [t for t, o in out if o is not None]
    inside = [t for t in passed if 0.5 <= t < 2.5]
    assert [t for t, o in out if o is None and not 0.5 <= t < 2.5] == []
    assert len(inside) == 10  # 5 Hz for 2 s
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(inside))
    for start in times(250, hz=100):  # every 1 s window within the fault
        if 0.5 <= start <= 1.5:
            assert sum(start <= t < start + 1.0 for t in inside) <= 5
    assert inj.faults[0].affected == 200 - 10
    assert all(o == (reading(t), 0.0) for t, o in out if o is not None)


def test_a_rate_above_the_sensor_rate_drops_nothing():
    inj = injector(entry("rate", rate_hz=50))
    assert all(o is not None for _, o in stream(inj, n=100, hz=20))
    assert inj.faults[0].affected == 0


def intermittent_pattern(probability, seed=0, n=4000):
    inj = injector(entry("intermittent", probability=probability), seed=seed)
    pattern = [inj.apply("drone1", "gnss", t, reading(t)) is None for t in times(n)]
    assert inj.faults[0].affected == sum(pattern)
    return pattern


def test_intermittent_loses_about_the_planned_fraction_reproducibly():
    pattern = intermittent_pattern(0.5, seed=3)
    assert 0.45 < sum(pattern) / len(pattern) < 0.55
    assert intermittent_pattern(0.5, seed=3) == pattern
    assert intermittent_pattern(0.5, seed=4) != pattern
    assert 0.15 < sum(intermittent_pattern(0.2)) / 4000 < 0.25


def test_intermittent_with_probability_zero_loses_none_and_one_loses_all():
    assert not any(intermittent_pattern(0.0, n=500))
    assert all(intermittent_pattern(1.0, n=500))


def test_intermittent_lets_the_kept_readings_through_unchanged():
    inj = injector(entry("intermittent", probability=0.5))
    kept = [(t, o) for t, o in stream(inj, n=200) if o is not None]
    assert kept
    assert all(o == (reading(t), 0.0) for t, o in kept)


def test_a_bias_and_a_delay_on_one_sensor_both_apply():
    inj = injector(entry("bias", offset=[1, 2, 3]), entry("delay", at=1, delay_s=0.3))
    values, delay = inj.apply("drone1", "gnss", 0.5, [0.0, 0.0, 0.0])
    assert (values, delay) == (pytest.approx([1.0, 2.0, 3.0]), 0.0)
    values, delay = inj.apply("drone1", "gnss", 1.5, [0.0, 0.0, 0.0])
    assert values == pytest.approx([1.0, 2.0, 3.0])
    assert delay == pytest.approx(0.3)
    assert [f.affected for f in inj.faults] == [2, 1]


def test_two_delays_on_one_sensor_add_up():
    inj = injector(entry("delay", delay_s=0.25), entry("delayed", at=1, delay_s=0.5))
    assert inj.apply("drone1", "gnss", 0.0, [1.0, 2.0, 3.0]) == ([1.0, 2.0, 3.0], 0.25)
    assert inj.apply("drone1", "gnss", 1.0, [1.0, 2.0, 3.0]) == ([1.0, 2.0, 3.0], 0.75)


def test_two_biases_on_one_sensor_add_up():
    inj = injector(entry("bias", offset=1), entry("wrong", offset=[0, 10, 0]))
    values, _ = inj.apply("drone1", "gnss", 0.0, [0.0, 0.0, 0.0])
    assert values == pytest.approx([1.0, 11.0, 1.0])


def test_a_dropout_wins_over_a_bias_on_the_same_sensor():
    inj = injector(entry("bias", offset=1), entry(at=1, **{"for": 1}))
    assert inj.apply("drone1", "gnss", 1.2, [0.0, 0.0, 0.0]) is None
    assert inj.apply("drone1", "gnss", 2.0, [0.0, 0.0, 0.0]) == (pytest.approx([1.0] * 3), 0.0)


def test_a_fault_on_one_sensor_leaves_other_sensors_and_vehicles_alone():
    inj = injector(entry(target="drone1/gnss"), entry("bias", "ship1/imu", offset=5),
                   entry("noise", "car1/heading", sigma=1))
    for t in times(20):
        assert inj.apply("drone1", "gnss", t, reading(t)) is None
        assert inj.apply("drone1", "imu", t, [1.0] * 6) == ([1.0] * 6, 0.0)
        assert inj.apply("ship1", "gnss", t, reading(t)) == (reading(t), 0.0)
        assert inj.apply("car1", "gnss", t, reading(t)) == (reading(t), 0.0)
        assert inj.apply("drone1", "heading", t, [0.3]) == ([0.3], 0.0)
        assert inj.apply("car1", "imu", t, [2.0] * 6) == ([2.0] * 6, 0.0)


def test_a_star_fault_applies_to_each_vehicle():
    inj = injector(entry("bias", "*/heading", offset=0.5))
    for vehicle in VEHICLES:
        assert inj.apply(vehicle, "heading", 0.0, [1.0]) == ([1.5], 0.0)
    assert [f.affected for f in inj.faults] == [1, 1, 1]


def test_affected_counts_the_readings_each_fault_touched():
    inj = injector(entry(target="drone1/gnss", at=1, **{"for": 1}),
                   entry("delay", "drone1/imu", at=0, delay_s=0.1, **{"for": 0.5}),
                   entry("stuck", "ship1/gnss", at=2),
                   entry("noise", "car1/gnss", at=4.5, sigma=0.1),
                   entry("bias", "car1/heading", at=10, offset=1))
    for t in times(50):
        for vehicle in VEHICLES:
            inj.apply(vehicle, "gnss", t, reading(t))
            inj.apply(vehicle, "imu", t, [0.0] * 6)
            inj.apply(vehicle, "heading", t, [0.0])
    assert [f.affected for f in inj.faults] == [10, 5, 30, 5, 0]


def test_link_lost_reports_the_fault_only_while_it_is_active():
    inj = injector(entry("link_loss", "ship1", at=2, **{"for": 1}), entry(target="ship1/gnss"))
    link = inj.faults[0]
    assert [inj.link_lost("ship1", t) is link for t in (0.0, 1.99, 2.0, 2.5, 2.99)] == [
        False, False, True, True, True]
    assert inj.link_lost("ship1", 3.0) is None
    assert inj.link_lost("drone1", 2.5) is None
    assert inj.link_lost("nobody", 2.5) is None
    assert link.affected == 0  # counting is the caller's job


def test_a_sensor_fault_is_not_a_link_loss():
    inj = injector(entry(target="drone1/gnss"))
    assert inj.link_lost("drone1", 1.0) is None


def test_the_first_active_link_loss_is_the_one_reported():
    inj = injector(entry("link_loss", "car1", at=0, **{"for": 5}),
                   entry("link_loss", "car1", at=3))
    first, second = inj.faults
    assert inj.link_lost("car1", 4.0) is first
    assert inj.link_lost("car1", 6.0) is second


# --- transitions ------------------------------------------------------------------------

def test_each_start_and_end_is_reported_once_and_in_order():
    inj = injector(entry(at=1, **{"for": 2}),                  # 0: [1, 3)
                   entry("noise", "drone1/imu", at=2),          # 1: [2, inf)
                   entry("stuck", "car1/gnss", at=5, **{"for": 0}),  # 2: starts and ends at 5
                   entry("link_loss", "ship1", at=0.5, **{"for": 4}))  # 3: [0.5, 4.5)
    events = [(t, f.index, change) for t in times(101) for f, change in inj.transitions(t)]
    assert events == [(0.5, 3, "start"), (1.0, 0, "start"), (2.0, 1, "start"),
                      (3.0, 0, "end"), (4.5, 3, "end"), (5.0, 2, "start"), (5.0, 2, "end")]
    assert [(f.started, f.ended) for f in inj.faults] == [
        (True, True), (True, False), (True, True), (True, True)]


def test_transitions_are_not_repeated_when_asked_again():
    inj = injector(entry(at=1, **{"for": 1}))
    assert inj.transitions(0.5) == []
    assert [c for _, c in inj.transitions(1.0)] == ["start"]
    assert inj.transitions(1.0) == []
    assert inj.transitions(1.5) == []
    assert [c for _, c in inj.transitions(2.0)] == ["end"]
    assert inj.transitions(2.0) == []
    assert inj.transitions(1e9) == []


def test_a_jump_past_a_whole_fault_reports_its_start_then_its_end():
    inj = injector(entry(at=1, **{"for": 1}))
    (fault, a), (same, b) = inj.transitions(10.0)
    assert fault is same is inj.faults[0]
    assert (a, b) == ("start", "end")


def test_a_fault_without_for_never_ends():
    inj = injector(entry("noise", at=3))
    events = [c for t in times(1000) for _, c in inj.transitions(t)]
    assert events == ["start"]
    assert inj.transitions(1e12) == []
    assert not inj.faults[0].ended


def test_a_star_fault_reports_one_start_per_vehicle():
    inj = injector(entry("link_loss", "*", at=1, **{"for": 1}))
    starts = inj.transitions(1.0)
    assert [(f.vehicle, c) for f, c in starts] == [
        ("drone1", "start"), ("ship1", "start"), ("car1", "start")]
    assert [c for _, c in inj.transitions(2.0)] == ["end"] * 3


# --- summary ----------------------------------------------------------------------------

def test_the_summary_has_one_row_per_fault_with_what_it_did():
    inj = injector(entry("off", "drone1/gnss", at=1, **{"for": 1}),
                   entry("garbage", "*/heading", at=0.5),
                   entry("link_loss", "ship1", at=10))
    for t in times(30):
        inj.transitions(t)
        inj.apply("drone1", "gnss", t, reading(t))
        inj.apply("car1", "heading", t, [0.0])
    rows = inj.summary()
    assert rows == [
        {"index": 0, "type": "off", "target": "drone1/gnss", "start_s": 1.0, "end_s": 2.0,
         "started": True, "ended": True, "affected": 10},
        {"index": 1, "type": "garbage", "target": "drone1/heading", "start_s": 0.5,
         "end_s": math.inf, "started": True, "ended": False, "affected": 0},
        {"index": 1, "type": "garbage", "target": "ship1/heading", "start_s": 0.5,
         "end_s": math.inf, "started": True, "ended": False, "affected": 0},
        {"index": 1, "type": "garbage", "target": "car1/heading", "start_s": 0.5,
         "end_s": math.inf, "started": True, "ended": False, "affected": 25},
        {"index": 2, "type": "link_loss", "target": "ship1", "start_s": 10.0,
         "end_s": math.inf, "started": False, "ended": False, "affected": 0},
    ]


# --- DelayLine --------------------------------------------------------------------------

def test_the_delay_line_releases_in_time_order_and_nothing_early():
    line, sent = DelayLine(), []
    for release_s, name in [(3.0, "a"), (1.0, "b"), (2.0, "c"), (0.5, "d")]:
        line.push(release_s, lambda name=name: sent.append(name))
    assert len(line) == 4
    line.release(0.4999)
    assert (sent, len(line)) == ([], 4)
    line.release(0.5)
    assert (sent, len(line)) == (["d"], 3)
    line.release(1.999)
    assert (sent, len(line)) == (["d", "b"], 2)
    line.release(10.0)
    assert (sent, len(line)) == (["d", "b", "c", "a"], 0)
    line.release(20.0)
    assert sent == ["d", "b", "c", "a"]


def test_the_delay_line_keeps_arrival_order_for_equal_times():
    line, sent = DelayLine(), []
    for i in range(20):
        line.push(1.0 if i % 2 else 2.0, lambda i=i: sent.append(i))
    line.release(1.0)
    assert sent == list(range(1, 20, 2))
    line.release(2.0)
    assert sent == list(range(1, 20, 2)) + list(range(0, 20, 2))
    assert len(line) == 0


def test_the_delay_line_releases_a_message_due_now_despite_float_rounding():
    line, sent = DelayLine(), []
    line.push(0.1 + 0.2, lambda: sent.append("x"))  # 0.30000000000000004
    line.release(0.3)
    assert sent == ["x"]


def test_an_empty_delay_line_releases_nothing():
    line = DelayLine()
    assert len(line) == 0
    line.release(1e9)
    assert len(line) == 0


def test_parameters_of_another_type_are_refused():
    with pytest.raises(FaultPlanError, match=r"\['delay_s'\] do not apply to dropout"):
        load_plan([{"at": 0, "target": "drone1/gnss", "type": "dropout", "delay_s": 2}],
                  VEHICLES)


def test_several_plans_in_one_run_keep_distinct_numbers():
    first = load_plan([{"at": 0, "target": "*/gnss", "type": "stuck"}], VEHICLES)
    second = load_plan([{"at": 1, "target": "drone1/gnss", "type": "stuck"}], VEHICLES,
                       first_index=len({f.index for f in first}))
    assert {f.index for f in first} == {0} and [f.index for f in second] == [1]
