"""`fleetbus fleet status` watching two vehicle buses over tcp, as an operator station
does: each bus rated from its graph and its vehicles' latched mission status, and a bus
whose registry does not answer shown as STALE."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from fleetbus.bus.config import BusConfig
from fleetbus.messages import MissionStatus
from tests.helpers import FnNode, run_on, wait_until


def _vehicle_bus(bus: Any, run_dir: Any, vehicle: str, status: MissionStatus) -> str:
    config = BusConfig.from_env(run_dir=run_dir, registry=f"ipc://{run_dir}/registry")
    registry = bus.registry(config, tcp="tcp://127.0.0.1:*")

    def setup(node: Any) -> None:
        node.pub = node.publisher(f"/{vehicle}/mission_status", MissionStatus, latched=True)
    node = bus.start(FnNode(f"/{vehicle}/mission", setup, config=config))
    run_on(node, lambda: node.pub.publish(status))
    return registry.endpoints[-1]


def test_fleet_status_rates_each_bus_from_its_graph_and_missions(bare_bus):
    bus = bare_bus
    car = _vehicle_bus(bus, bus.run_dir, "car1", MissionStatus(
        vehicle_id="car1", state="active", waypoint=1, waypoints=3))
    ship = _vehicle_bus(bus, bus.new_run_dir(), "ship1", MissionStatus(
        vehicle_id="ship1", state="failed", message="cannot be planned: too_tight"))
    nowhere = "tcp://127.0.0.1:9"  # discard port: nothing answers
    result = wait_until(lambda: (r := subprocess.run(
        [sys.executable, "-m", "fleetbus.cli", "fleet", "status", car, ship, nowhere,
         "--json", "--timeout", "1"], capture_output=True, text=True, timeout=60))
        and json.loads(r.stdout)[0]["vehicles"] and r, what="both buses seen")
    assert result.returncode == 1  # not every bus is OK
    by_bus = {s["registry"]: s for s in json.loads(result.stdout)}
    assert by_bus[car]["level"] == "OK", by_bus[car]
    assert by_bus[car]["vehicles"] == [{"vehicle_id": "car1", "mission": "active",
                                        "waypoint": 1, "waypoints": 3, "message": ""}]
    assert by_bus[ship]["level"] == "ERROR"
    assert "ship1: mission failed: cannot be planned" in by_bus[ship]["problems"][0]
    assert by_bus[nowhere]["level"] == "STALE"
    assert nowhere in by_bus[nowhere]["problems"][0]
