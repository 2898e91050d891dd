"""The simulator node on a real bus."""

from __future__ import annotations

import math

import pytest

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.messages import CarCommand, Clock, Diagnostic, GnssFix, Header, Imu, VehicleState
from fleetbus.nodes.simulator import Simulator
from tests.helpers import graph_nodes, run_on, wait_until

VEHICLES = [
    {"id": "car1", "type": "car", "start": {"x": 0.0, "y": 0.0}},
    {"id": "ship1", "type": "vessel", "start": {"x": 50.0}},
    {"id": "drone1", "type": "quadrotor", "start": {"z": 10.0}},
]


@pytest.fixture
def sim(bus):
    node = Simulator("sim", params={"vehicles": VEHICLES, "mode": "scaled", "speed": 5.0,
                                     "seed": 3})
    bus.start(node)
    return node


def test_simulator_publishes_clock_state_and_sensors_and_obeys_commands(bus, sim):
    seen: dict[str, list] = {"clock": [], "state": [], "imu": [], "gnss": []}

    def watcher(node):
        node.subscribe("/clock", Clock, seen["clock"].append)
        node.subscribe("/car1/state", VehicleState, seen["state"].append)
        node.subscribe("/car1/imu", Imu, seen["imu"].append)
        node.subscribe("/car1/gnss", GnssFix, seen["gnss"].append)
        node.cmd = node.publisher("/car1/cmd", CarCommand)

    watch = bus.node("watch", watcher)
    wait_until(lambda: all(seen.values()), what="clock, state, imu and gnss")
    assert seen["clock"][-1].stamp_ns > seen["clock"][0].stamp_ns  # sim time runs
    assert seen["imu"][-1].linear_acceleration.z == pytest.approx(9.81, abs=0.5)
    assert abs(seen["gnss"][-1].latitude_deg - 59.9) < 1e-3

    def drive():
        watch.cmd.publish(CarCommand(acceleration_mps2=2.0))

    for _ in range(200):  # keep the command fresh (timeout 0.5 s of sim time)
        run_on(watch, drive)
        if seen["state"][-1].pose.position.x > 1.0:
            break
        count = len(seen["state"])
        wait_until(lambda: len(seen["state"]) > count, what="a new state")  # noqa: B023
    assert seen["state"][-1].pose.position.x > 1.0  # it drove east
    assert seen["state"][-1].vehicle_type == "car"


def test_a_nan_command_is_counted_and_the_simulation_goes_on(bus, sim):
    clock: list[Clock] = []

    def sender(node):
        node.subscribe("/clock", Clock, clock.append)
        node.cmd = node.publisher("/car1/cmd", CarCommand)

    node = bus.node("sender", sender)
    wait_until(lambda: node.cmd.subscribers >= 1 and clock, what="the link to the simulator")
    run_on(node, lambda: node.cmd.publish(CarCommand(acceleration_mps2=math.nan)))
    wait_until(lambda: sim.counters["rejected_command"] == 1, what="the rejection counted")
    before = clock[-1].stamp_ns
    wait_until(lambda: clock[-1].stamp_ns > before, what="the clock to keep running")
    assert sim.world.vehicles["car1"].rejected_commands == 1


@pytest.mark.parametrize("vehicles, match", [
    ([{"id": "b", "type": "blimp"}], "unknown vehicle type 'blimp'"),
    ([{"id": "s", "type": "vessel", "params": {"mass_kg": -1.0}}], "mass_kg"),
    ([{"type": "car"}], "needs an id"),
    ([], "lists no vehicle"),
])
def test_impossible_configurations_fail_setup_by_name(bus, vehicles, match):
    node = Simulator("bad", params={"vehicles": vehicles})
    bus.start(node, check=False)
    assert node.setup_error is not None and match in str(node.setup_error)


class Driver(fleetbus.Node):
    """A trivial controller on the sim clock: accelerate and steer a little, every
    control period, stamped with the sim time it answers for."""

    def setup(self) -> None:
        self.pub = self.publisher("/car1/cmd", CarCommand, latched=True)
        self.timer(0.05, lambda: self.pub.publish(CarCommand(
            header=Header(stamp_ns=self.now_ns()), acceleration_mps2=1.0, steering_rad=0.1)))


def lockstep_run(bus, name: str) -> dict[int, tuple]:
    """Car states by sim time (ns) over the first 3 s of a lockstep run."""
    states: dict[int, tuple] = {}
    sim = Simulator(f"sim_{name}", params={
        "vehicles": VEHICLES[:1], "mode": "lockstep", "seed": 7, "control_rate_hz": 20.0})
    bus.start(sim)
    bus.start(Driver(f"driver_{name}", config=BusConfig.from_env(clock="sim")))

    def record(msg: VehicleState) -> None:
        p = msg.pose.position
        states[msg.header.stamp_ns] = (p.x, p.y, msg.twist.linear.x, msg.twist.linear.y)

    bus.node(f"rec_{name}", lambda n: n.subscribe("/car1/state", VehicleState, record))
    wait_until(lambda: 3_000_000_000 in states, timeout=60, what="3 s of sim time")
    for node in list(bus.nodes):
        node.stop()
        node.stopped.wait(5)
    bus.nodes.clear()
    assert sim.lockstep_timeouts == 0
    return {t: s for t, s in states.items() if t <= 3_000_000_000}


def test_lockstep_runs_are_identical_bit_for_bit(bus):
    first, second = lockstep_run(bus, "a"), lockstep_run(bus, "b")
    assert len(first) >= 140  # 50 Hz state over 3 s (the first few may precede the link)
    shared = sorted(set(first) & set(second))
    assert shared[-1] == 3_000_000_000
    assert [first[t] for t in shared] == [second[t] for t in shared]
    assert first[3_000_000_000][0] > 2.0  # and the car did drive


def test_each_vehicle_type_gets_its_own_sensors(bus, sim):
    from fleetbus.messages import BaroAltitude, Heading, SpeedLog, WheelSpeed

    got: dict[str, list] = {}

    def watcher(node):
        for topic, cls in (("/drone1/baro", BaroAltitude), ("/car1/wheel_speed", WheelSpeed),
                           ("/ship1/speed_log", SpeedLog), ("/ship1/heading", Heading)):
            node.subscribe(topic, cls, got.setdefault(topic, []).append)

    bus.node("sensors", watcher)
    wait_until(lambda: len(got) == 4 and all(got.values()), what="every sensor topic")
    assert got["/drone1/baro"][-1].altitude_m == pytest.approx(10.0, abs=2.0)  # starts at 10 m
    assert got["/car1/wheel_speed"][-1].speed_mps == pytest.approx(0.0, abs=0.3)
    assert got["/ship1/heading"][-1].yaw_rad == pytest.approx(0.0, abs=0.1)
    topics = {pub.topic for pub in graph_nodes(bus.config)["/sim"].publishers}
    assert "/drone1/baro" in topics and "/car1/baro" not in topics  # no barometer on a car


FAULT_PLAN = """
faults:
  - {at: 1.0, for: 1.0, target: car1/gnss, type: "off"}   # PX4's name for a dropout
  - {at: 2.5, for: 0.5, target: car1, type: link_loss}
"""


def test_a_fault_plan_drops_readings_cuts_the_link_and_reports_each_fault(bus, tmp_path,
                                                                          caplog):
    from fleetbus.messages import Event

    plan = tmp_path / "faults.yaml"
    plan.write_text(FAULT_PLAN)
    sim = Simulator("sim", params={
        "vehicles": VEHICLES[:1], "mode": "lockstep", "seed": 7, "fault_plan": str(plan),
        "command_timeout_s": 0.2, "gnss_latency_s": 0.0})
    fixes: list[GnssFix] = []
    events: list[Event] = []

    def recorder(node):
        node.subscribe("/car1/gnss", GnssFix, fixes.append)
        node.subscribe("/events", Event, events.append, depth=100)

    bus.node("rec", recorder)
    bus.start(sim)
    bus.start(Driver("driver", config=BusConfig.from_env(clock="sim")))
    wait_until(lambda: sim.world.time_s >= 4.0, timeout=60, what="4 s of sim time")
    with caplog.at_level("INFO", logger="fleetbus"):
        sim.stop()
        sim.stopped.wait(5)

    stamps = [f.header.stamp_ns / 1e9 for f in fixes]
    assert any(t < 1.0 for t in stamps) and any(t >= 2.0 for t in stamps)
    assert not [t for t in stamps if 1.0 <= t < 2.0]  # nothing while the receiver was off
    assert [(e.kind, e.data["index"], e.data["type"]) for e in events] == [
        ("fault_start", "0", "dropout"), ("fault_end", "0", "dropout"),
        ("fault_start", "1", "link_loss"), ("fault_end", "1", "link_loss")]
    assert [e.header.stamp_ns for e in events] == [1_000_000_000, 2_000_000_000,
                                                   2_500_000_000, 3_000_000_000]
    dropout, link = sim.faults.faults
    assert dropout.affected == 5  # 1 s of a 5 Hz receiver
    assert link.affected == 10  # 0.5 s of 20 Hz commands never arrived...
    assert sim.world.vehicles["car1"].stale_steps > 0  # ...so the car fell back to braking
    assert "fault 1 link_loss on car1, 2.500-3.000 s: ended, 10" in caplog.text


def test_a_fault_plan_naming_a_missing_sensor_fails_setup_by_name(bus):
    node = Simulator("bad", params={"vehicles": VEHICLES[:1], "faults": [
        {"at": 0, "target": "car1/baro", "type": "stuck"}]})
    bus.start(node, check=False)
    assert "car1 has no sensor 'baro'" in str(node.setup_error)


def test_gnss_fixes_are_published_their_latency_after_they_are_measured(bus):
    sim = Simulator("sim", params={"vehicles": VEHICLES[:1], "mode": "lockstep",
                                   "gnss_latency_s": 0.3})
    fixes: list[GnssFix] = []
    bus.node("rec", lambda n: n.subscribe("/car1/gnss", GnssFix, fixes.append))
    bus.start(sim)
    bus.start(Driver("driver", config=BusConfig.from_env(clock="sim")))
    wait_until(lambda: fixes and sim.world.time_s >= 2.0, timeout=60, what="2 s of sim time")
    sim.stop()
    sim.stopped.wait(5)
    newest = max(f.header.stamp_ns for f in fixes) / 1e9
    assert newest <= sim.world.time_s - 0.3 + 1e-9  # younger fixes were still held back
    assert len(sim.delayed) >= 1


class Decliner(fleetbus.Node):
    """A controller that never commands but says so each period, as ControllerNode does
    while it has no estimate or a failsafe is in charge."""

    def setup(self) -> None:
        self.pub = self.publisher("/car1/control", Diagnostic)
        self.timer(0.05, lambda: self.pub.publish(Diagnostic(
            header=Header(stamp_ns=self.now_ns()), message="no fresh estimate",
            values={"command": "none"})))


def test_a_declined_tick_answers_the_lockstep_like_a_command(bus):
    sim = Simulator("sim", params={"vehicles": VEHICLES[:1], "mode": "lockstep",
                                   "control_rate_hz": 20.0, "lockstep_timeout_s": 30.0})
    bus.start(sim)
    clock: list[Clock] = []
    bus.node("rec", lambda n: n.subscribe("/clock", Clock, clock.append))
    # the decliner links to /car1/control, not /car1/cmd: the simulator starts once its
    # command subscription sees a publisher, so give it one that stays silent -- once the
    # decliner's link is up, or its first answer could go nowhere
    bus.start(Decliner("decliner", config=BusConfig.from_env(clock="sim")))
    control = next(s for s in sim._subscriptions if s.topic == "/car1/control")
    wait_until(lambda: control.publishers, what="the decliner's link")
    bus.node("silent", lambda n: setattr(n, "pub", n.publisher("/car1/cmd", CarCommand)))
    wait_until(lambda: clock and clock[-1].stamp_ns >= 2_000_000_000, timeout=60,
               what="2 s of sim time without a command")
    assert sim.lockstep_timeouts == 0  # every step was answered, none waited out
    assert sim.world.vehicles["car1"].stale_steps > 0  # on its safe command all along
