"""The scenario suite: every scenario of the catalog on the whole stack, in lockstep,
through real processes and sockets. Each must end in its expected mission state, never
breach its fence, keep at least its margin of clearance and command only finite numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.scenarios.catalog import SCENARIOS, Scenario
from tests.scenarios.harness import Outcome, non_finite, run_scenario, vehicle_id


def _params(scenarios: list[Scenario]) -> list:
    out = []
    for s in scenarios:
        marks = [pytest.mark.timeout(int(s.max_wall_s + 120))]
        if s.slow:
            marks.append(pytest.mark.slow)
        if s.xfail:
            marks.append(pytest.mark.xfail(strict=s.xfail_strict, reason=s.xfail))
        out.append(pytest.param(s, id=s.name, marks=marks))
    return out


def _explain(outcome: Outcome) -> str:
    summary = outcome.run.summary
    lines = [f"notes: {summary.notes}; sim {summary.sim_time_s:.1f} s, "
             f"wall {summary.wall_time_s:.1f} s"]
    for v in summary.vehicles:
        lines.append(repr(v))
    for run in outcome.run.runs:
        lines += [f"  event {e}" for e in run.events[-30:]]
    lines.append("---- launch log tail ----")
    lines.append(outcome.log_tail())
    return "\n".join(lines)


@pytest.mark.parametrize("scenario", _params(SCENARIOS))
def test_scenario(scenario: Scenario, bus_env: Path, tmp_path: Path) -> None:
    """Proves what `scenario.doc` says (see catalog.py): the run ends in the expected
    mission state with no breach, at least the guard's margin of clearance throughout,
    only finite commands, every planned fault applied and, where planned, the controller
    killed and restarted."""
    outcome = run_scenario(scenario, tmp_path)
    why = f"{scenario.name}: {scenario.doc}\n{_explain(outcome)}"
    print(why)
    [v] = outcome.run.summary.vehicles
    assert v.vehicle_id == vehicle_id(scenario)
    # 1. the mission's outcome
    assert v.mission_state == scenario.expect, why
    if scenario.expect == "completed":
        assert v.waypoints_reached == v.waypoints_total == len(scenario.waypoints), why
    else:
        assert v.waypoints_reached < v.waypoints_total, why
    if scenario.expect_event:
        [run] = outcome.run.runs
        assert any(scenario.expect_event in e[3] for e in run.events), why
    # 2. no geofence breach (a fence must have arrived to be checked)
    assert v.breaches == 0, why
    # 3. clearance never below the vehicle's margin
    assert math.isfinite(v.margin_m), f"no guard margin was recorded\n{why}"
    assert not v.clearance_below_margin, why
    assert v.min_clearance_m >= v.margin_m, why
    # 4. commands arrived, every one finite
    assert outcome.commands, f"no command was recorded\n{why}"
    bad = non_finite(outcome.commands)
    assert not bad, f"{len(bad)} non-finite commands, first: {bad[:5]}\n{why}"
    # every fault of the plan was really applied to this vehicle
    started = {(e.data.get("index"), e.data.get("vehicle_id")) for e in outcome.fault_events
               if e.kind == "fault_start"}
    for index, _ in enumerate(scenario.faults):
        assert (str(index), vehicle_id(scenario)) in started, (
            f"fault {index} never started: {outcome.fault_events}\n{why}")
    # the controller crash really happened and the supervisor brought it back
    if scenario.crash_controller_at_s is not None:
        crash = outcome.crash
        assert crash is not None and crash.killed_pid is not None, (crash, why)
        assert crash.restarted_pid is not None, (crash, why)
        assert "exited with -9" in outcome.log_path.read_text(), why
