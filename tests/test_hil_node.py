"""The HIL node on a real bus: an autopilot played by pymavlink (PX4) or a struct client
(ArduPilot) drives the vehicle, and its ground truth, counters and troubles reach the bus."""

from __future__ import annotations

import socket
import struct

import pytest

from fleetbus.messages import Diagnostic, Event, VehicleState
from fleetbus.nodes.hil import HilNode
from tests.helpers import wait_until
from tests.test_px4 import Rig, lockstep


def recorder(record: dict, vehicle: str):
    def setup(node):
        node.links = [
            node.subscribe(f"/{vehicle}/state", VehicleState, record["states"].append,
                           depth=10000),
            node.subscribe("/diagnostics", Diagnostic, record["diags"].append, depth=1000),
            node.subscribe("/events", Event, record["events"].append, depth=1000)]
    return setup


def new_record() -> dict:
    return {"states": [], "diags": [], "events": []}


def test_a_px4_autopilot_flies_the_vehicle_on_the_bus(bus):
    record = new_record()
    rec = bus.node("rec", recorder(record, "drone1"))
    hil = bus.start(HilNode("hil", params={"vehicle_id": "drone1", "vehicle_type": "quadrotor",
                                           "protocol": "px4", "port": 0,
                                           "start": {"x": 5.0, "y": -2.0}}))
    wait_until(lambda: all(s.publishers for s in rec.links), what="the HIL node's links")
    assert hil.endpoint.startswith("tcp:127.0.0.1:")
    port = int(hil.endpoint.rsplit(":", 1)[1])
    ap = Rig(link=None, sim=None, port=port).connect()  # type: ignore[arg-type]
    ap.heartbeat()
    lockstep(ap, 500, [0.6] * 4)  # 2 s climbing
    state = wait_until(lambda: record["states"] and record["states"][-1].pose.position.z > 1.0
                       and record["states"][-1], what="the vehicle climbing on the bus")
    assert state.vehicle_id == "drone1" and state.vehicle_type == "quadrotor"
    assert (state.pose.position.x, state.pose.position.y) == pytest.approx((5.0, -2.0))
    diag = wait_until(lambda: [d for d in record["diags"] if d.values.get("actuators") == "500"],
                      what="the adapter's counters")[-1]
    assert diag.name == "hil/drone1" and diag.level == "ok"
    assert diag.values["endpoint"] == hil.endpoint
    ap.sock.close()  # type: ignore[attr-defined]


def test_ardupilot_garbage_becomes_an_event_and_the_rover_still_drives(bus):
    record = new_record()
    rec = bus.node("rec", recorder(record, "car1"))
    hil = bus.start(HilNode("hil", params={"vehicle_id": "car1", "vehicle_type": "car",
                                           "protocol": "ardupilot", "port": 0}))
    wait_until(lambda: all(s.publishers for s in rec.links), what="the HIL node's links")
    port = int(hil.endpoint.rsplit(":", 1)[1])
    sitl = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sitl.bind(("127.0.0.1", 0))
    sitl.settimeout(5.0)
    sitl.sendto(b"\x00\x01 not a servo packet", ("127.0.0.1", port))
    for frame in range(200):  # throttle forward at 50 Hz
        pwm = [1500, 0, 1800] + [0] * 13
        sitl.sendto(struct.pack("<HHI16H", 18458, 50, frame, *pwm), ("127.0.0.1", port))
        assert sitl.recv(65536).startswith(b"\n{")
    sitl.close()
    event = wait_until(lambda: [e for e in record["events"] if e.kind == "hil"],
                       what="a hil event")[0]
    assert event.data["counter"] == "bad_magic" and "car1" in event.message
    state = wait_until(lambda: record["states"] and record["states"][-1].twist.linear.x > 1.0
                       and record["states"][-1], what="the rover driving east")
    assert state.vehicle_type == "car"


def test_px4_refuses_a_car_by_name(bus):
    node = bus.start(HilNode("hil", params={"vehicle_id": "car1", "vehicle_type": "car",
                                            "protocol": "px4", "port": 0}), check=False)
    assert "flies a quadrotor, not a car" in str(node.setup_error)
