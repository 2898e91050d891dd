"""The controller node on a real bus: with the simulator in lockstep it drives a car along
its planned path inside the corridor; it never acts on a stale estimate, yields to the
geofence guard's failsafe, and refuses a bad path by name."""

from __future__ import annotations

import math

import numpy as np

from fleetbus.bus.config import BusConfig
from fleetbus.messages import (
    CarCommand,
    Corridor,
    CorridorCell,
    Diagnostic,
    Event,
    GeofenceStatus,
    Header,
    Odometry,
    Path,
    Pose,
    Vector3,
    VehicleState,
)
from fleetbus.models import Bicycle
from fleetbus.nodes.controller import ControllerNode
from fleetbus.nodes.simulator import Simulator
from fleetbus.planners.smoothing import speed_profile
from tests.helpers import TruthOdometry, run_on, wait_until

LANE_HALF_WIDTH_M = 3.0
PARAMS = {"vehicle_id": "car1", "vehicle_type": "car", "jit": False}


def lane(stamp_ns: int, length_m: float = 40.0) -> tuple[Path, Corridor]:
    """A straight path east along y = 0 with a speed profile ending at rest, and one
    corridor cell: the lane |y| <= 3 m, from 5 m behind the start to 5 m past the end."""
    x = np.arange(0.0, length_m + 0.5, 1.0)
    speeds = speed_profile(x, np.zeros_like(x), 4.0, 2.0, 1.5, 1.5, 0.0, 0.0)
    header = Header(stamp_ns=stamp_ns, frame_id="map")
    path = Path(header=header, poses=[Pose(position=Vector3(x=float(v))) for v in x],
                speeds_mps=[float(v) for v in speeds])
    cell = CorridorCell(a_x=[1.0, -1.0, 0.0, 0.0], a_y=[0.0, 0.0, 1.0, -1.0],
                        b=[length_m + 5, 5.0, LANE_HALF_WIDTH_M, LANE_HALF_WIDTH_M])
    return path, Corridor(header=header, cells=[cell])


def recorder(record: dict):
    def setup(node):
        node.links = [
            node.subscribe("/car1/cmd", CarCommand, record["cmd"].append, depth=10000),
            node.subscribe("/car1/control", Diagnostic, record["control"].append, depth=10000),
            node.subscribe("/events", Event, record["events"].append, depth=1000)]
        node.subscribe("/car1/state", VehicleState, record["states"].append, depth=100000)
        node.path = node.publisher("/car1/path", Path, latched=True)
        node.corridor = node.publisher("/car1/corridor", Corridor, latched=True)
        node.odom = node.publisher("/car1/odometry", Odometry)
        node.status = node.publisher("/car1/geofence_status", GeofenceStatus)
    return setup


def new_record() -> dict:
    return {"cmd": [], "control": [], "events": [], "states": []}


def kinds(record: dict) -> list[str]:
    return [e.kind for e in record["events"] if e.source == "/control"]


def test_the_controller_drives_a_car_along_its_path_inside_the_corridor(bus):
    record = new_record()
    sim_clock = BusConfig.from_env(clock="sim")
    rec = bus.node("rec", recorder(record))
    control = bus.start(ControllerNode("control", params=PARAMS, config=sim_clock))
    wait_until(lambda: rec.path.subscribers and rec.corridor.subscribers
               and all(s.publishers for s in rec.links), what="the controller's links")
    path, corridor = lane(stamp_ns=1)
    run_on(rec, lambda: (rec.path.publish(path), rec.corridor.publish(corridor)))
    wait_until(lambda: control.controller is not None and control.controller.path is not None,
               timeout=60, what="the controller following the path")
    bus.start(Simulator("sim", params={
        "vehicles": [{"id": "car1", "type": "car", "start": {"y": 1.0}}],
        "mode": "lockstep", "control_rate_hz": 10.0}))
    bus.start(TruthOdometry("truth", config=sim_clock))
    wait_until(lambda: "path_complete" in kinds(record) and record["states"] and abs(
        record["states"][-1].twist.linear.x) < 0.05, timeout=120, what="the end of the path")

    lower, upper = Bicycle().input_bounds
    for cmd in record["cmd"]:
        u = [cmd.acceleration_mps2, cmd.steering_rad]
        assert all(math.isfinite(v) for v in u)
        assert all(lo <= v <= hi for v, lo, hi in zip(u, lower, upper, strict=True))
    ys = [s.pose.position.y for s in record["states"]]
    assert max(abs(y) for y in ys) <= LANE_HALF_WIDTH_M  # never out of the corridor
    end = record["states"][-1].pose.position
    assert abs(end.x - 40.0) < 1.0 and abs(end.y) < 0.3  # stopped at the end, on the line
    following = [d for d in record["control"] if d.values.get("command") == "sent"
                 and d.values["remaining_m"] != "nan"]
    declined = [d for d in record["control"] if d.values.get("command") == "none"]
    assert all(d.level == "warn" and d.message for d in declined)  # each says why
    assert following and all(d.values["fallback"] == "none" for d in following)
    assert {"solve_ms", "iterations", "status", "max_slack_m"} <= set(following[-1].values)
    assert max(float(d.values["max_slack_m"]) for d in following) < 1e-3
    assert control.controller.mpc.counters["failed"] == 0


def ready_controller(bus, record: dict):
    """A recorder and a controller (wall clock) linked both ways, its solver built."""
    rec = bus.node("rec", recorder(record))
    control = bus.start(ControllerNode("control", params=PARAMS))
    wait_until(lambda: all(p.subscribers for p in (rec.path, rec.corridor, rec.odom,
                                                   rec.status))
               and all(s.publishers for s in rec.links), what="the controller's links")
    wait_until(lambda: control.controller is not None, timeout=60, what="the solver")
    return rec, control


def test_no_command_on_a_stale_estimate_or_under_a_failsafe_and_a_bad_path_is_refused(bus):
    record = new_record()
    rec, control = ready_controller(bus, record)

    def odometry() -> None:
        rec.odom.publish(Odometry(header=Header(stamp_ns=control.now_ns())))

    # Fresh estimate, no path: the safe command (a car at rest holds with zero input).
    run_on(rec, odometry)
    wait_until(lambda: record["cmd"], what="a hold command")
    assert record["control"][-1].values["fallback"] == "safe"

    # The estimate goes stale: the controller says so and stops commanding.
    wait_until(lambda: "estimate_stale" in kinds(record), what="the stale estimate")
    # the controller's topics share its socket: once its declined tick is in, every
    # command it sent before is in too
    wait_until(lambda: record["control"][-1].values.get("command") == "none",
               what="the declined tick")
    sent = len(record["cmd"])
    run_on(rec, lambda: None)
    run_on(control, lambda: control._tick())  # a tick with the stale estimate
    run_on(rec, lambda: None)
    assert len(record["cmd"]) == sent

    # The guard takes over: fresh estimates, still no command from the controller.
    run_on(rec, lambda: rec.status.publish(GeofenceStatus(vehicle_id="car1", failsafe="hold")))
    wait_until(lambda: "control_yielded" in kinds(record), what="yielding to the guard")
    run_on(rec, odometry)
    run_on(control, lambda: control._tick())
    assert len(record["cmd"]) == sent

    # A path whose speeds are not numbers: refused by name, counted, nothing followed.
    path, corridor = lane(stamp_ns=7)
    path.speeds_mps[3] = float("nan")
    run_on(rec, lambda: (rec.path.publish(path), rec.corridor.publish(corridor)))
    wait_until(lambda: "invalid_path" in kinds(record), what="the refused path")
    refusal = next(e for e in record["events"] if e.kind == "invalid_path")
    assert "finite" in refusal.message
    assert control.counters.get("invalid_path", 0) == 1 and control.controller.path is None


def test_an_empty_path_holds_the_vehicle_without_an_error(bus):
    record = new_record()
    rec, control = ready_controller(bus, record)
    header = Header(stamp_ns=5, frame_id="map")
    run_on(rec, lambda: (rec.path.publish(Path(header=header)),
                         rec.corridor.publish(Corridor(header=header))))
    held = wait_until(lambda: [e for e in record["events"] if e.kind == "path_following"],
                      what="the hold")
    assert "holding" in held[-1].message and "invalid_path" not in kinds(record)
    assert control.controller.path is None  # nothing to follow: the safe command holds


def test_a_solve_not_answered_in_time_is_ended_reported_and_after_three_the_solver_switched(
        bus, tmp_path, monkeypatch):
    """hang_after_s so short that every call counts as hung (a solve tries another guess
    while within its budget): each is ended with its process, the vehicle still gets a
    command, a critical event names the file holding the solve's inputs, and after the
    third such step the controller builds the other back-end."""
    monkeypatch.setenv("FLEETBUS_CACHE_DIR", str(tmp_path))
    record = new_record()
    rec = bus.node("rec", recorder(record))
    control = bus.start(ControllerNode("control", params=PARAMS | {"hang_after_s": 1e-6}))
    wait_until(lambda: all(p.subscribers for p in (rec.path, rec.corridor, rec.odom))
               and all(s.publishers for s in rec.links), what="the controller's links")
    wait_until(lambda: control.controller is not None, timeout=60, what="the solver")
    path, corridor = lane(stamp_ns=3)
    run_on(rec, lambda: (rec.path.publish(path), rec.corridor.publish(corridor)))
    wait_until(lambda: control.controller.path is not None, what="the path loaded")

    def hangs() -> list[Event]:
        run_on(rec, lambda: rec.odom.publish(Odometry(header=Header(
            stamp_ns=control.now_ns()))))  # kept fresh: the controller keeps solving
        return [e for e in record["events"] if e.kind == "control_solver_hung"]

    hung = wait_until(lambda: (h := hangs()) and "switching" in h[-1].message and h,
                      timeout=60, interval=0.1, what="the switch of back-end")
    assert all(e.severity == "critical" for e in hung)
    assert "fatrop solve did not return" in hung[0].message
    assert not any("switching" in e.message for e in hung[:-1])
    assert all("no guess answered" in e.message for e in hung)
    assert hung[-1].message.endswith("; 3 such steps: switching to ipopt") and len(hung) == 3
    saved = np.load(hung[0].data["inputs"])
    assert {"z0", "reference", "corridor_A", "guess", "settings"} <= set(saved.files)
    assert saved["z0"].shape == (6,) and np.all(np.isfinite(saved["guess"]))
    assert control.settings.solver == "ipopt"
    sent = [d for d in record["control"] if d.values.get("command") == "sent"]
    assert any(d.values["fallback"] == "safe" and d.values["status"].startswith("hung")
               for d in sent)  # the vehicle was commanded meanwhile
