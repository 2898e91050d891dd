"""The geofence guard on a real bus, with the simulator in lockstep: it stops a car that
would leave the fence, brings back one that is outside, and is not fooled by bad input."""

from __future__ import annotations

import math

import pytest

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.messages import (
    CarCommand,
    Event,
    GeofenceStatus,
    Header,
    String,
    VehicleState,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.nodes.geofence_guard import GeofenceGuard
from fleetbus.nodes.simulator import Simulator
from fleetbus.planners import Geofence, Zone
from tests.helpers import TruthOdometry, run_on, wait_until

BOX = [(-50.0, -30.0), (40.0, -30.0), (40.0, 30.0), (-50.0, 30.0)]


class Driver(fleetbus.Node):
    """A controller that knows nothing of fences: full ahead at a constant acceleration."""

    def setup(self) -> None:
        accel = self.param("accel", 1.0).value
        pub = self.publisher("/car1/cmd", CarCommand, latched=True)
        self.timer(0.05, lambda: pub.publish(CarCommand(
            header=Header(stamp_ns=self.now_ns()), acceleration_mps2=accel)))


def run_guarded_car(bus, start_x: float, accel: float, until) -> dict:
    record = {"states": [], "events": [], "status": []}

    def recorder(node):
        node.subscribe("/car1/state", VehicleState, record["states"].append, depth=10000)
        node.watching = [
            node.subscribe("/events", Event, record["events"].append, depth=1000),
            node.subscribe("/car1/geofence_status", GeofenceStatus, record["status"].append,
                           depth=10000)]
        node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)

    sim_clock = BusConfig.from_env(clock="sim")  # in the test's bus environment
    rec = bus.node("rec", recorder)
    guard = bus.start(GeofenceGuard("guard", params={
        "vehicle_id": "car1", "vehicle_type": "car", "radius_m": 1.0}, config=sim_clock))
    wait_until(lambda: rec.fence.subscribers >= 1, what="the guard's fence subscription")
    fence = Geofence([Zone.polygon("yard", BOX, action="hold")])
    run_on(rec, lambda: rec.fence.publish(fence_to_msg(fence)))
    wait_until(lambda: guard.fence is not None, what="the guard's fence")
    wait_until(lambda: all(sub.publishers for sub in rec.watching), what="the guard's topics")
    sim = bus.start(Simulator("sim", params={
        "vehicles": [{"id": "car1", "type": "car", "start": {"x": start_x}}],
        "mode": "lockstep", "lockstep_topics": ["/car1/geofence_status"]}))
    bus.start(TruthOdometry("truth", config=sim_clock))
    bus.start(Driver("driver", params={"accel": accel}, config=sim_clock))
    wait_until(lambda: until(record), timeout=60, what="the guard's outcome")
    record.update(sim=sim, guard=guard, rec=rec)
    return record


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events if e.source == "/guard"]


def test_a_car_heading_out_of_the_fence_is_stopped_inside_it(bus):
    def stopped(r):
        return (r["status"] and r["status"][-1].failsafe == "hold"
                and abs(r["states"][-1].twist.linear.x) < 0.01)

    r = run_guarded_car(bus, start_x=0.0, accel=1.5, until=stopped)
    xs = [s.pose.position.x for s in r["states"]]
    assert max(xs) < 40.0 - 1.0  # its body (radius 1 m) never crosses the east edge
    assert max(xs) > 30.0  # and not stopped absurdly early
    assert kinds(r["events"])[:2] == ["predicted_breach", "failsafe"]
    assert r["events"][0].data["zone_id"] == "yard"
    assert r["sim"].world.vehicles["car1"].overridden_commands > 0  # it outranked the driver
    last = r["status"][-1]
    assert last.inside and last.zone_id == "yard" and last.signed_distance_m > 0

    # The operator clears the failsafe: it is gone, and said so.
    reply = run_on(r["rec"], lambda: r["rec"].call("/car1/failsafe_reset", String(data="op")))
    assert reply.data == "cleared hold"
    wait_until(lambda: "failsafe_cleared" in kinds(r["events"]), what="the cleared event")


def test_a_car_outside_the_fence_is_brought_back_in_by_the_shortest_way(bus):
    def held(r):
        return "recovered" in kinds(r["events"]) and r["status"][-1].failsafe == "hold" and abs(
            r["states"][-1].twist.linear.x) < 0.01

    r = run_guarded_car(bus, start_x=46.0, accel=0.0, until=held)
    assert kinds(r["events"])[:2] == ["breach", "failsafe"]
    recover = next(e for e in r["events"] if e.kind == "failsafe")
    assert recover.data["action"] == "recover"
    final = r["states"][-1].pose.position
    assert final.x < 40.0 - 0.5 and abs(final.y) < 2.0  # in, near the nearest point
    assert r["status"][-1].inside


def test_a_bad_geofence_is_counted_and_the_old_one_kept(bus):
    guard = bus.start(GeofenceGuard("guard", params={"vehicle_id": "car1",
                                                     "vehicle_type": "car"}))
    events: list[Event] = []

    def sender(node):
        node.subscribe("/events", Event, events.append)
        node.pub = node.publisher("/geofence", GeofenceMsg, latched=True)

    rec = bus.node("rec", sender)
    wait_until(lambda: rec.pub.subscribers >= 1, what="the guard's subscription")
    good = fence_to_msg(Geofence([Zone.polygon("yard", BOX)]))
    run_on(rec, lambda: rec.pub.publish(good))
    wait_until(lambda: guard.fence is not None, what="the good fence")
    bad = fence_to_msg(Geofence([Zone.polygon("yard", BOX)]))
    bad.zones[0].floor_m, bad.zones[0].ceiling_m = 50.0, 10.0
    run_on(rec, lambda: rec.pub.publish(bad))
    wait_until(lambda: guard.counters["invalid_geofence"] == 1, what="the bad fence counted")
    assert guard.fence.zones[0].floor_m == -math.inf  # the good one still guards
    wait_until(lambda: any(e.kind == "invalid_geofence" and "'yard'" in e.message
                           and "floor" in e.message for e in events), what="the event")


@pytest.mark.parametrize("params, match", [
    ({"vehicle_id": "x", "vehicle_type": "blimp"}, "vehicle_type"),
    ({"vehicle_type": "car"}, "vehicle_id"),
])
def test_bad_guard_configurations_fail_setup_by_name(bus, params, match):
    node = GeofenceGuard("bad", params=params)
    bus.start(node, check=False)
    assert node.setup_error is not None and match in str(node.setup_error)
