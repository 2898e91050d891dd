"""A recorded lockstep run is the regression test of a node: car_south_road recorded on
the whole stack gives a complete MCAP file that the official reader reads, and the car's
fusion node, run again on the recording's inputs (`replay_check`), publishes the same
estimates bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcap.reader import make_reader

from fleetbus.launch.graph import NodeSpec
from fleetbus.launch.worker import build
from fleetbus.recording import mcap_format as fmt
from fleetbus.recording.replay_check import recorded_node, replay_check
from tests.scenarios.catalog import SCENARIOS
from tests.scenarios.harness import run_scenario

SCENARIO = next(s for s in SCENARIOS if s.name == "car_south_road")


@pytest.mark.timeout(int(SCENARIO.max_wall_s + 180))
def test_a_recorded_run_replays_the_fusion_node_exactly(bus_env: Path, tmp_path: Path):
    path = tmp_path / "run.mcap"
    outcome = run_scenario(SCENARIO, tmp_path, record=path)
    assert outcome.run.summary.vehicles[0].mission_state == "completed"
    with path.open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        metadata = {m.name: m.metadata for m in reader.iter_metadata()}
    topics = {c.topic: c for c in summary.channels.values()}
    assert {"/car1/imu", "/car1/odometry", "/car1/cmd", "/clock", "/geofence"} <= set(topics)
    assert summary.schemas[topics["/car1/odometry"].schema_id].name == "fleetbus/Odometry"
    assert metadata[fmt.STATUS_METADATA]["complete"] == "true", metadata[fmt.STATUS_METADATA]
    assert json.loads(metadata[fmt.RUN_METADATA]["seed"]) == SCENARIO.seed

    node = recorded_node([path], "/car1/fusion")
    spec = NodeSpec(name=node["name"], node_class=node["class"],
                    namespace=node["namespace"], params=node["params"])
    result = replay_check([path], lambda config: build(spec, config))
    assert result.compared["/car1/odometry"] > 100, result
    assert result.ok, (result.recorded, result.replayed, result.differences[:5])
