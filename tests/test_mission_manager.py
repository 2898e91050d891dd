"""The mission manager on a real bus, on sim time driven by the test: it sends its planner
the mission leg by leg, reports progress and completion, steps aside for the geofence
guard and resumes after it, carries out hold, resume, return and land orders, fails a
mission that runs late, and refuses a bad mission file by name."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fleetbus.bus.config import BusConfig
from fleetbus.messages import (
    Clock,
    Event,
    GeofenceStatus,
    Header,
    Mission,
    MissionCommand,
    MissionStatus,
    Odometry,
    Pose,
    Twist,
    Vector3,
)
from fleetbus.messages import Geofence as GeofenceMsg
from fleetbus.missions import load_mission
from fleetbus.nodes.controller import ControllerNode
from fleetbus.nodes.conversions import fence_to_msg
from fleetbus.nodes.fusion import FusionNode
from fleetbus.nodes.mission_manager import MissionManager
from fleetbus.nodes.planner import PlannerNode
from fleetbus.nodes.simulator import Simulator
from fleetbus.planners import Geofence, Zone
from tests.helpers import barrier, run_on, wait_until

DATA = Path(__file__).resolve().parent / "data" / "missions"
DRONE = DATA / "drone_survey.geojson"
CAR = DATA / "car_quay.geojson"


class Harness:
    """A stand-in for the rest of the graph: the clock, estimates, the guard's status and
    the operator's orders in; the manager's mission, status and events recorded."""

    def __init__(self, bus: Any, vehicle: str = "car1") -> None:
        self.bus, self.vehicle = bus, vehicle
        self.missions: list[Mission] = []
        self.status: list[MissionStatus] = []
        self.events: list[Event] = []

        def setup(node: Any) -> None:
            node.links = [
                node.subscribe(f"/{vehicle}/mission", Mission, self.missions.append),
                node.subscribe(f"/{vehicle}/mission_status", MissionStatus,
                               self.status.append, depth=10000),
                node.subscribe("/events", Event, self.events.append, depth=1000)]
            node.ticks = node.publisher("/clock", Clock)
            node.odom = node.publisher(f"/{vehicle}/odometry", Odometry)
            node.guard = node.publisher(f"/{vehicle}/geofence_status", GeofenceStatus)
            node.orders = node.publisher(f"/{vehicle}/mission_command", MissionCommand)
            node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)
            node.planner = node.publisher("/events", Event)  # stands in for the planner's

        self.rec = bus.node("rec", setup)
        self.manager: MissionManager | None = None

    def start(self, **params: Any) -> MissionManager:
        kind = "quadrotor" if self.vehicle.startswith("drone") else "car"
        self.manager = self.bus.start(MissionManager("mission", params={
            "vehicle_id": self.vehicle, "vehicle_type": kind, **params},
            config=BusConfig.from_env(clock="sim")))
        pubs = [self.rec.ticks, self.rec.odom, self.rec.guard, self.rec.orders,
                self.rec.planner]
        if "mission" in params:
            pubs.append(self.rec.fence)
        wait_until(lambda: all(p.subscribers for p in pubs)
                   and all(s.publishers for s in self.rec.links), what="the manager's links")
        return self.manager

    def clock(self, t: float) -> None:
        ns = round(t * 1e9)
        run_on(self.rec, lambda: self.rec.ticks.publish(Clock(stamp_ns=ns)))
        wait_until(lambda: self.manager.now_ns() == ns, what=f"sim time {t} s", interval=0.001)
        barrier(self.manager)  # what was due at that time has run

    def at(self, t: float, x: float, y: float, z: float = 0.0, speed: float = 0.0) -> None:
        """Sim time t, and an estimate at (x, y, z) moving at `speed`, stamped t."""
        self.clock(t)
        ns = round(t * 1e9)
        odometry = Odometry(header=Header(stamp_ns=ns), pose=Pose(position=Vector3(
            x=x, y=y, z=z)), twist=Twist(linear=Vector3(x=speed)))
        run_on(self.rec, lambda: self.rec.odom.publish(odometry))
        wait_until(lambda: self.manager.estimate is not None
                   and round(self.manager.estimate.stamp_s * 1e9) == ns, what=f"estimate at {t}")
        barrier(self.manager)

    def guard(self, failsafe: str, zone: str = "yard") -> None:
        run_on(self.rec, lambda: self.rec.guard.publish(GeofenceStatus(
            vehicle_id=self.vehicle, failsafe=failsafe, zone_id=zone)))
        wait_until(lambda: self.manager.failsafe == failsafe, what=f"failsafe {failsafe}")
        barrier(self.manager)

    def order(self, action: str) -> Event:
        """Send an order and return the manager's answer."""
        answered = len(self.mission_events("command"))
        run_on(self.rec, lambda: self.rec.orders.publish(MissionCommand(
            vehicle_id=self.vehicle, action=action, source="test")))
        return wait_until(lambda: self.mission_events("command")[answered:], what=f"{action} "
                          f"answered")[0]

    def mission_events(self, what: str | None = None) -> list[Event]:
        return [e for e in self.events if e.source == "/mission" and e.kind == "mission"
                and what in (None, e.data["event"])]

    def wait_status(self, state: str, waypoint: int | None = None,
                    message: str | None = None) -> MissionStatus:
        """The latest status once it is `state` (at `waypoint`, with `message` in it)."""
        def seen() -> MissionStatus | None:
            last = self.status[-1] if self.status else None
            ok = last is not None and last.state == state and waypoint in (
                None, last.waypoint) and (message or "") in last.message
            return last if ok else None
        return wait_until(seen, what=f"status {state} at waypoint {waypoint} ({message})")

    def wait_missions(self, count: int) -> Mission:
        wait_until(lambda: len(self.missions) >= count, what=f"{count} missions sent")
        return self.missions[count - 1]

    def states(self) -> list[tuple[str, int]]:
        """The status's (state, waypoint) as it changed, repetitions removed."""
        seen: list[tuple[str, int]] = []
        for s in self.status:
            if not seen or seen[-1] != (s.state, s.waypoint):
                seen.append((s.state, s.waypoint))
        return seen


def xyz(mission: Mission) -> list[tuple[float, float, float]]:
    return [(round(w.position.x, 6), round(w.position.y, 6), round(w.position.z, 6))
            for w in mission.waypoints]


CAR_WAYPOINTS = [{"x": 10, "y": 0}, {"x": 20, "y": 0, "hold_s": 2}, {"x": 20, "y": 10}]


def test_a_mission_is_sent_leg_by_leg_and_reported_to_completion(bus):
    h = Harness(bus)
    manager = h.start(waypoints=CAR_WAYPOINTS, start_delay_s=1.0)
    h.wait_status("idle")
    h.at(0.0, 0, 0)
    h.at(0.5, 0, 0)
    assert manager.tracker is None  # the start delay runs from the first estimate
    h.at(1.0, 0, 0)
    first = h.wait_missions(1)
    assert (first.mission_id, first.vehicle_id, first.return_home) == (
        "car1-mission", "car1", False)
    assert xyz(first) == [(10, 0, 0), (20, 0, 0)]  # up to the hold: the planner stops there
    h.wait_status("active", 0)
    h.at(2.0, 9.5, 0.3, speed=2.0)
    h.wait_status("active", 1)
    h.at(3.0, 20, 0)
    h.at(4.9, 20.2, 0)
    assert len(h.missions) == 1 and manager.tracker.index == 1  # still holding
    h.at(5.0, 20.1, 0)
    assert xyz(h.wait_missions(2)) == [(20, 10, 0)]
    h.at(6.0, 20, 9.5, speed=1.0)  # there, but not stopped
    h.wait_status("active", 2)
    h.at(7.0, 20, 9.8, speed=0.05)
    done = h.wait_status("completed", 3)
    assert done.waypoints == 3 and done.mission_id == "car1-mission" and done.message == ""
    wait_until(lambda: h.mission_events("completed"), what="the completed event")
    assert [e.data["event"] for e in h.mission_events()] == [
        "started", "waypoint_reached", "waypoint_reached", "waypoint_reached", "completed"]
    assert [e.data.get("waypoint") for e in h.mission_events("waypoint_reached")] == [
        "0", "1", "2"]
    assert all(e.data["vehicle_id"] == "car1" and e.data["mission_id"] == "car1-mission"
               for e in h.mission_events())
    assert h.states() == [("idle", 0), ("active", 0), ("active", 1), ("active", 2),
                          ("completed", 3)]
    assert len(h.missions) == 2


def test_a_geojson_mission_waits_for_the_fence_and_flies_home_in_3d(bus):
    h = Harness(bus, "drone1")
    manager = h.start(mission=str(DRONE))
    h.at(0.0, 0, 0, 0)  # home, on the ground
    h.at(0.5, 0, 0, 0)
    assert manager.tracker is None and manager.mission is None  # no frame yet
    origin = (54.321, 10.141, 0.0)  # not the file's: the fence's frame is the one flown
    fence = Geofence([Zone.polygon("harbour", [(-500, -500), (500, -500), (500, 500),
                                               (-500, 500)])], origin)
    run_on(h.rec, lambda: h.rec.fence.publish(fence_to_msg(fence)))
    first = h.wait_missions(1)
    expected = load_mission(DRONE, origin)
    assert first.mission_id == "harbour-survey" and not first.return_home
    assert xyz(first) == xyz(Mission(waypoints=expected.waypoints[:3]))  # to the 5 s hold
    goals = [(w.position.x, w.position.y, w.position.z) for w in expected.waypoints]
    h.at(1.0, goals[0][0], goals[0][1], 5.0)  # right below it: not reached in 3-D
    h.wait_status("active", 0)
    for t, k in ((2.0, 0), (3.0, 1), (4.0, 2)):
        h.at(t, *goals[k])
    h.at(9.0, *goals[2])
    second = h.wait_missions(2)
    assert xyz(second) == [tuple(round(v, 6) for v in goals[3]), (0, 0, 0)]  # home, explicit
    h.at(10.0, *goals[3], speed=3.0)
    returning = h.wait_status("returning", 4)
    assert returning.waypoints == 4 and returning.distance_to_waypoint_m > 100
    h.at(11.0, 0.3, 0.2, 0.1, speed=0.0)
    h.wait_status("completed", 4)
    reached = [e.data["waypoint"] for e in h.mission_events("waypoint_reached")]
    assert reached == ["0", "1", "2", "3", "4"]
    assert "home reached" in h.mission_events("waypoint_reached")[-1].message


def test_the_return_home_parameter_overrides_the_files(bus):
    h = Harness(bus, "drone1")
    manager = h.start(mission=str(DRONE), return_home=False)
    run_on(h.rec, lambda: h.rec.fence.publish(fence_to_msg(Geofence(
        [Zone.polygon("box", [(-500, -500), (500, -500), (500, 500)])], (54.32, 10.14, 5.0)))))
    h.at(0.0, 0, 0, 0)
    h.wait_missions(1)
    assert manager.mission.return_home is False and len(manager.tracker.goals) == 4


def test_a_failsafe_suspends_the_mission_which_resumes_from_where_the_vehicle_is(bus):
    h = Harness(bus)
    manager = h.start(waypoints=[{"x": 10, "y": 0}, {"x": 20, "y": 0}, {"x": 30, "y": 0}])
    h.at(0.0, 0, 0)
    h.wait_missions(1)
    h.at(1.0, 10, 0, speed=2.0)
    h.wait_status("active", 1)
    h.guard("hold")
    h.wait_status("failsafe", 1, "geofence guard: hold for zone 'yard' (failsafe 1)")
    taken = wait_until(lambda: h.mission_events("failsafe"), what="the failsafe event")[0]
    assert taken.severity == "warn" and taken.data["failsafes"] == "1"
    h.at(2.0, 20, 0)  # wherever the guard takes it, the mission does not advance
    assert manager.tracker.index == 1 and len(h.missions) == 1
    h.guard("none")
    resumed = h.wait_missions(2)
    assert xyz(resumed) == [(20, 0, 0), (30, 0, 0)]
    h.wait_status("active", 1)
    cleared = wait_until(lambda: h.mission_events("failsafe_cleared"), what="cleared")[0]
    assert cleared.data["failsafes"] == "1"
    h.guard("recover", zone="pier")
    h.guard("hold", zone="pier")  # the guard changes its action: still one failsafe
    h.wait_status("failsafe", 1, "hold for zone 'pier' (failsafe 2)")
    counts = wait_until(lambda: [e.data["failsafes"] for e in h.mission_events("failsafe")]
                        if len(h.mission_events("failsafe")) == 3 else None, what="3 events")
    assert counts == ["1", "2", "2"]


def test_hold_resume_return_and_land_orders(bus):
    h = Harness(bus)
    manager = h.start(waypoints=[{"x": 10, "y": 0}, {"x": 20, "y": 0}], return_home=True,
                      autostart=False)
    h.at(0.0, -5, 0)  # home
    h.at(1.0, -5, 0)
    assert manager.tracker is None
    refused = h.order("resume")
    assert refused.data["outcome"] == "refused" and "idle" in refused.message
    assert h.order("start").data["outcome"] == "accepted"
    assert xyz(h.wait_missions(1)) == [(10, 0, 0), (20, 0, 0), (-5, 0, 0)]
    h.at(2.0, 10, 0, speed=3.0)
    h.wait_status("active", 1)
    assert h.order("start").data["outcome"] == "refused"  # already running

    h.at(3.0, 14, 0.5, speed=3.0)
    assert h.order("hold").data["outcome"] == "accepted"
    hold = h.wait_missions(2)
    assert hold.mission_id == "car1-mission/hold" and xyz(hold) == [(14, 0.5, 0)]
    h.wait_status("holding", 1, "hold ordered")

    h.at(4.0, 15, 0.5)
    h.order("resume")
    assert xyz(h.wait_missions(3)) == [(20, 0, 0), (-5, 0, 0)]
    h.wait_status("active", 1)

    h.order("return")
    to_home = h.wait_missions(4)
    assert to_home.mission_id == "car1-mission/return" and xyz(to_home) == [(-5, 0, 0)]
    h.wait_status("returning", 1)
    h.at(5.0, -5.2, 0.1, speed=0.0)
    h.wait_status("holding", 1, "at home")

    land = h.order("land")  # a car cannot: it holds
    assert land.data["outcome"] == "accepted"
    assert xyz(h.wait_missions(5)) == [(-5.2, 0.1, 0)]
    h.wait_status("holding", 1, "a car cannot land")
    assert [e.data["action"] for e in h.mission_events("command")] == [
        "resume", "start", "start", "hold", "resume", "return", "land"]


def test_a_drone_lands_where_it_is(bus):
    h = Harness(bus, "drone1")
    h.start(waypoints=[{"x": 0, "y": 0, "z": 10}])
    h.at(0.0, 0, 0, 0)
    h.wait_missions(1)
    h.at(1.0, 3, 4, 8, speed=1.0)
    h.order("land")
    landing = h.wait_missions(2)
    assert landing.mission_id == "drone1-mission/land" and xyz(landing) == [(3, 4, 0)]
    h.wait_status("landing", 0)
    h.at(2.0, 3, 4, 2.0, speed=0.1)  # right above: not yet
    h.at(3.0, 3.1, 4, 0.05, speed=0.0)
    h.wait_status("holding", 0, "landed")


def test_a_mission_that_runs_late_fails_and_holds(bus):
    h = Harness(bus)
    manager = h.start(waypoints=CAR_WAYPOINTS, timeout_s=5.0)
    h.at(0.0, 0, 0)
    h.wait_missions(1)
    h.at(3.0, 4, 0, speed=1.0)
    h.clock(5.0)
    assert manager.mode == "mission"
    h.clock(6.0)  # no estimate since t = 3: the 1 Hz check still fails it
    h.wait_status("failed", 0, "not completed within 5 s")
    event = wait_until(lambda: h.mission_events("failed"), what="the failed event")[0]
    assert event.severity == "error" and "5 s" in event.message
    hold = h.wait_missions(2)
    assert hold.mission_id == "car1-mission/failed" and xyz(hold) == [(4, 0, 0)]


def test_a_leg_the_planner_cannot_plan_fails_the_mission(bus):
    """The planner's plan_failed event for the leg last sent fails the mission with its
    reason (and a hold is sent); one for another vehicle or an older leg does not."""
    h = Harness(bus)
    manager = h.start(waypoints=CAR_WAYPOINTS)
    h.at(0.0, 0, 0)
    leg = h.wait_missions(1)

    def refuse(vehicle: str, stamp_ns: int, why: str) -> None:
        event = Event(source=f"/{vehicle}/planner", kind="plan_failed", severity="error",
                      message=f"{vehicle}: mission {leg.mission_id!r}: {why}: holding",
                      data={"vehicle_id": vehicle, "mission_id": leg.mission_id,
                            "mission_stamp_ns": str(stamp_ns)})
        run_on(h.rec, lambda: h.rec.planner.publish(event))

    refuse("car2", leg.header.stamp_ns, "another vehicle's")
    refuse("car1", leg.header.stamp_ns - 1, "an older leg's")
    wait_until(lambda: len([e for e in h.events if e.kind == "plan_failed"]) == 2,
               what="both stray refusals")
    h.at(1.0, 1, 0, speed=1.0)
    assert manager.mode == "mission" and manager.plan_failure == ""
    refuse("car1", leg.header.stamp_ns, "too_tight: the bend is too tight")
    wait_until(lambda: manager.plan_failure, what="the refusal taken")
    h.at(2.0, 2, 0, speed=1.0)
    status = h.wait_status("failed", 0, "cannot be planned")
    assert "the bend is too tight" in status.message
    event = wait_until(lambda: h.mission_events("failed"), what="the failed event")[0]
    assert event.severity == "error" and "too tight" in event.message
    hold = h.wait_missions(2)  # where the estimate before that step put it
    assert hold.mission_id == "car1-mission/failed" and xyz(hold) == [(1, 0, 0)]


def test_a_completed_mission_never_times_out_and_is_started_again_not_resumed(bus):
    h = Harness(bus)
    manager = h.start(waypoints=[{"x": 10, "y": 0}], timeout_s=5.0)
    h.at(0.0, 0, 0)
    h.wait_missions(1)
    h.at(1.0, 10, 0)
    h.wait_status("completed", 1)
    h.order("hold")
    h.wait_status("holding", 1)
    h.clock(7.0)
    assert manager.mode == "hold" and not h.mission_events("failed")
    refused = h.order("resume")
    assert refused.data["outcome"] == "refused" and "holding" in refused.message
    h.order("start")  # from the first waypoint again, with a new timeout
    assert xyz(h.wait_missions(3)) == [(10, 0, 0)]
    h.wait_status("active", 0)
    assert len(h.mission_events("started")) == 2 and manager.started_s == 7.0


def _bad_file(tmp_path: Path) -> str:
    doc = json.loads(DRONE.read_text())
    doc["features"][1]["properties"]["speed_mps"] = -2
    path = tmp_path / "bad-speed.geojson"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("vehicle, params, fragments", [
    ("drone1", {"mission": "nowhere.geojson"}, ["cannot read mission file 'nowhere.geojson'"]),
    ("drone1", {"mission": _bad_file}, ["bad-speed.geojson", "feature 1 (seq 1)",
                                        "'speed_mps'"]),
    ("car1", {"mission": str(DRONE)}, ["drone_survey.geojson", "for vehicle 'drone1'"]),
    ("car1", {}, ["'mission'", "'waypoints'", "neither"]),
    ("car1", {"mission": str(CAR), "waypoints": CAR_WAYPOINTS}, ["both"]),
    ("car1", {"waypoints": [{"x": 1}]}, ["inline mission waypoint 0", "needs y"]),
])
def test_a_bad_mission_fails_setup_by_name(bus, tmp_path, vehicle, params, fragments):
    params = {k: v(tmp_path) if callable(v) else v for k, v in params.items()}
    kind = "quadrotor" if vehicle.startswith("drone") else "car"
    node = MissionManager("bad", params={"vehicle_id": vehicle, "vehicle_type": kind, **params})
    bus.start(node, check=False)
    assert node.setup_error is not None
    message = str(node.setup_error)
    assert message.startswith("/bad: ")
    for fragment in fragments:
        assert fragment in message, message


def test_a_simulated_car_completes_its_geojson_mission_on_the_whole_stack(bus):
    """Simulator in lockstep, fusion, planner, MPC controller and the manager, all on sim
    time: the car drives the quay route from the example file and stops at its end."""
    status: list[MissionStatus] = []
    events: list[Event] = []
    sim_clock = BusConfig.from_env(clock="sim")

    def recorder(node: Any) -> None:
        node.subscribe("/car1/mission_status", MissionStatus, status.append, depth=10000)
        node.subscribe("/events", Event, events.append, depth=10000)
        node.fence = node.publisher("/geofence", GeofenceMsg, latched=True)

    rec = bus.node("rec", recorder)
    fence = Geofence([Zone.polygon("quay", [(-30, -20), (80, -20), (80, 20), (-30, 20)])],
                     (54.32, 10.14, 5.0))
    run_on(rec, lambda: rec.fence.publish(fence_to_msg(fence)))
    car = {"vehicle_id": "car1", "vehicle_type": "car"}
    bus.start(FusionNode("fusion", params=car, config=sim_clock))
    bus.start(PlannerNode("planner", params=car, config=sim_clock))
    control = bus.start(ControllerNode("control", params={**car, "jit": False,
                                                          "trigger": "estimate"},
                                       config=sim_clock))
    manager = bus.start(MissionManager("mission", params={**car, "mission": str(CAR)},
                                       config=sim_clock))
    wait_until(lambda: rec.fence.subscribers >= 2 and manager.mission is not None,
               what="the fence placing the mission")
    wait_until(lambda: control.controller is not None, timeout=60, what="the solver")
    sim = bus.start(Simulator("sim", params={
        "vehicles": [{"id": "car1", "type": "car"}], "mode": "lockstep", "seed": 3,
        "control_rate_hz": 10.0, "lockstep_topics": ["/car1/odometry"]}))
    wait_until(lambda: status and status[-1].state == "completed", timeout=120,
               what="the mission completed")
    kinds = [e.data["event"] for e in events if e.source == "/mission"]
    assert kinds == ["started", "waypoint_reached", "waypoint_reached", "completed"]
    done = status[-1]
    assert done.waypoint == done.waypoints == 2 and done.distance_to_waypoint_m <= 3.0
    x, y = sim.world.vehicles["car1"].state[:2]  # the truth, give or take the estimate's error
    assert math.hypot(x - 40.0, y) < 4.0
