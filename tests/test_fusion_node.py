"""The fusion node on a real bus, fed by the simulator in lockstep."""

from __future__ import annotations

import math

import pytest

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.messages import (
    CarCommand,
    Diagnostic,
    GnssFix,
    Header,
    Odometry,
    VehicleState,
)
from fleetbus.nodes.fusion import FusionNode
from fleetbus.nodes.simulator import Simulator
from tests.helpers import run_on, wait_until


class Driver(fleetbus.Node):
    def setup(self) -> None:
        pub = self.publisher("/car1/cmd", CarCommand, latched=True)
        self.timer(0.05, lambda: pub.publish(CarCommand(
            header=Header(stamp_ns=self.now_ns()), acceleration_mps2=0.5,
            steering_rad=0.1 * math.sin(0.3 * self.now()))))


def test_fusion_follows_the_simulated_car_and_reports_its_consistency(bus):
    odometry: list[Odometry] = []
    truth: dict[int, VehicleState] = {}
    diagnostics: list[Diagnostic] = []
    sim_clock = BusConfig.from_env(clock="sim")

    def recorder(node):
        node.subscribe("/car1/odometry", Odometry, odometry.append, depth=1000)
        node.subscribe("/car1/state", VehicleState,
                       lambda m: truth.__setitem__(m.header.stamp_ns, m), depth=1000)
        node.subscribe("/diagnostics", Diagnostic, diagnostics.append, depth=1000)
        node.gnss = node.publisher("/car1/gnss", GnssFix)

    rec = bus.node("rec", recorder)
    fusion = bus.start(FusionNode("fusion", params={"vehicle_id": "car1",
                                                    "vehicle_type": "car"}, config=sim_clock))
    sim = bus.start(Simulator("sim", params={
        "vehicles": [{"id": "car1", "type": "car"}], "mode": "lockstep", "seed": 2,
        "lockstep_topics": ["/car1/odometry"]}))
    bus.start(Driver("driver", config=sim_clock))
    wait_until(lambda: sim.world.time_s >= 15.0, timeout=120, what="15 s of sim time")
    wait_until(lambda: rec.gnss.subscribers >= 1, what="the fusion node's GNSS link")
    run_on(rec, lambda: rec.gnss.publish(GnssFix(header=Header(stamp_ns=sim.world.steps),
                                                 latitude_deg=math.nan)))
    wait_until(lambda: fusion.counters["invalid_measurement"] == 1, what="the NaN fix counted")
    wait_until(lambda: any(d.name == "fusion/car1/gnss" and d.values["invalid"] == "1"
                           for d in diagnostics), what="the NaN fix in the diagnostics")

    assert sim.lockstep_timeouts == 0
    matched = [(o, truth[o.header.stamp_ns]) for o in odometry
               if o.header.stamp_ns in truth and o.header.stamp_ns > 5e9]
    assert len(matched) >= 90  # odometry at 20 Hz clock ticks meets 50 Hz truth at 10 Hz
    errors = [math.dist((o.pose.position.x, o.pose.position.y),
                        (s.pose.position.x, s.pose.position.y)) for o, s in matched]
    rmse = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert rmse < 0.5  # GNSS alone: 1.4 m
    last = odometry[-1]
    assert last.child_frame_id == "car1/base" and last.pose_covariance[0] > 0
    names = {d.name for d in diagnostics}
    assert {"fusion/car1/gnss", "fusion/car1/heading", "fusion/car1/wheel_speed",
            "fusion/car1/imu"} <= names
    gnss = [d for d in diagnostics if d.name == "fusion/car1/gnss"][-1]
    assert float(gnss.values["mean_nis"]) == pytest.approx(2.0, abs=1.0)  # dof 2
    assert int(gnss.values["accepted"]) > 50 and gnss.values["late"] == "0"


def test_without_gnss_and_heading_the_node_says_not_ready_and_publishes_no_odometry(bus):
    diagnostics: list[Diagnostic] = []
    odometry: list[Odometry] = []

    def recorder(node):
        node.subscribe("/diagnostics", Diagnostic, diagnostics.append)
        node.subscribe("/ship1/odometry", Odometry, odometry.append)

    bus.node("rec", recorder)
    bus.start(FusionNode("fusion", params={"vehicle_id": "ship1", "vehicle_type": "vessel",
                                           "diagnostics_rate_hz": 20.0}))
    wait_until(lambda: len(diagnostics) >= 3, what="three diagnostics")
    assert all(d.name == "fusion/ship1" and d.level == "warn"
               and d.message.startswith("not ready") for d in diagnostics)
    assert odometry == []


@pytest.mark.parametrize("params, match", [
    ({"vehicle_id": "x", "vehicle_type": "blimp"}, "vehicle_type"),
    ({"vehicle_id": "x", "vehicle_type": "vessel", "sensors": {"baro": {}}},
     "uses no sensor ['baro']"),
    ({"vehicle_id": "x", "vehicle_type": "car", "sensors": {"gnss": {"gate": 3}}},
     "unexpected keyword argument 'gate'"),
])
def test_bad_fusion_configurations_fail_setup_by_name(bus, params, match):
    node = FusionNode("bad", params=params)
    bus.start(node, check=False)
    assert node.setup_error is not None and match in str(node.setup_error)
