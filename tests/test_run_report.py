"""The run report as a library: metrics checked against runs whose answers are known by
hand (a straight drive in a rectangle, an excursion out of the fence, a drone's climb
under a ceiling, a vehicle with nothing recorded), and the run folder checked as files:
JSON without NaN, Markdown naming the failures, a PNG of the promised size, and the
terminal table."""

from __future__ import annotations

import itertools
import json
import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.patches import Circle
from rich.console import Console

from fleetbus.missions.plot import DPI, FIGSIZE_IN, trajectory_figure
from fleetbus.missions.report import (
    COLUMNS,
    RunSummary,
    VehicleRun,
    render_markdown,
    render_table,
    row_cells,
    summarise,
    write_run_folder,
)
from fleetbus.planners import Geofence, Zone

# Allowed: x in [-10, 110], y in [-20, 20]; a circular no-go zone well off the road.
RECTANGLE = Geofence([
    Zone.polygon("yard", [(-10, -20), (110, -20), (110, 20), (-10, 20)]),
    Zone.circle_zone("pond", (50, 15), 3.0, inclusion=False),
])
# A 100 m square with a 50 m ceiling.
AIRSPACE = Geofence([Zone.polygon("box", [(-50, -50), (50, -50), (50, 50), (-50, 50)],
                                  ceiling_m=50.0)])


def drive(*xyz: tuple[float, float, float], dt: float = 0.1, steps: int = 100) -> np.ndarray:
    """Truth (t, x, y, z) along straight legs through the given points, `steps` per leg."""
    legs = [np.linspace(a, b, steps, endpoint=False) for a, b in itertools.pairwise(xyz)]
    points = np.vstack([*legs, np.asarray(xyz[-1], float)[None]])
    return np.column_stack([dt * np.arange(len(points)), points])


def vehicle_run(**fields: Any) -> VehicleRun:
    """A car that drove 100 m along its planned path inside RECTANGLE; fields override."""
    base = VehicleRun(
        vehicle_id="car1", vehicle_type="car",
        truth=drive((0, 0, 0), (100, 0, 0)),
        estimate_error_m=[0.3, 0.4, 0.0],
        planned_paths=[np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]])],
        fence=RECTANGLE, margin_m=3.0, solve_ms=list(np.arange(1.0, 101.0)),
        waypoints_total=2, waypoints_reached=2, mission_state="completed",
        events=[(1.0, "mission", "info", "started")],
        latency_p50_ms=12.0, latency_p99_ms=30.0, latency_budget_p99_ms=50.0)
    return replace(base, **fields)


def excursion() -> VehicleRun:
    """A car that ran 20 m past the fence's east edge and came back."""
    return vehicle_run(vehicle_id="car2", truth=drive((0, 0, 0), (130, 0, 0), (50, 0, 0)),
                       mission_state="failed", waypoints_reached=1,
                       events=[(14.0, "breach", "error", "left zone 'yard'")])


def drone(top_m: float) -> VehicleRun:
    """A quadrotor that climbs to `top_m` and flies 30 m east in AIRSPACE."""
    return vehicle_run(vehicle_id="uav1", vehicle_type="quadrotor", fence=AIRSPACE,
                       truth=drive((0, 0, 0), (0, 0, top_m), (30, 0, top_m)),
                       planned_paths=[np.array([[0, 0, 0], [0, 0, top_m], [30, 0, top_m]],
                                               float)],
                       margin_m=10.0)


def empty() -> VehicleRun:
    """A vessel of which nothing but one truth sample and its state were recorded."""
    return vehicle_run(vehicle_id="boat1", vehicle_type="vessel",
                       truth=np.array([[5.0, 1.0, 2.0, 0.0]]), estimate_error_m=[],
                       planned_paths=[], fence=None, margin_m=math.nan, solve_ms=[],
                       waypoints_total=3, waypoints_reached=0, mission_state="active",
                       events=[], latency_p50_ms=math.nan, latency_p99_ms=math.nan,
                       latency_budget_p99_ms=math.nan)


def fleet(*runs: VehicleRun) -> RunSummary:
    return RunSummary(vehicles=[summarise(r) for r in runs], graph="mixed_fleet", seed=7,
                      sim_time_s=60.0, wall_time_s=20.0, real_time_factor=3.0, cpu_s=None,
                      notes=["synthetic"])


# -- metrics --------------------------------------------------------------------------------


def test_a_straight_drive_inside_the_fence_is_measured_exactly() -> None:
    # z wanders on the road: a car's path is horizontal, so it must not add length.
    run = vehicle_run()
    run.truth[:, 3] = np.sin(run.truth[:, 0])
    s = summarise(run)
    assert s.path_length_m == pytest.approx(100.0)
    assert s.optimal_length_m == pytest.approx(100.0)
    assert s.path_ratio == pytest.approx(1.0)
    assert s.tracking_rmse_m == pytest.approx(0.0, abs=1e-9)
    # The ends are 10 m from the west and east edges; the pond (radius 3 at y=15) is
    # 12 m from the road; the yard's long sides are 20 m away.
    assert s.min_clearance_m == pytest.approx(10.0)
    assert (s.breaches, s.ok_fence, s.clearance_below_margin) == (0, True, False)
    assert s.ok_mission and s.ok and s.failures == [] and s.warnings == []
    assert s.duration_s == pytest.approx(10.0)  # 101 samples, 0.1 s apart
    assert (s.waypoints_reached, s.waypoints_total) == (2, 2)


def test_solver_estimator_and_latency_statistics() -> None:
    s = summarise(vehicle_run())
    assert (s.solve_p50_ms, s.solve_p99_ms) == (pytest.approx(50.5), pytest.approx(99.01))
    assert s.solver_ticks == 100
    assert s.estimate_rmse_m == pytest.approx(math.sqrt((0.09 + 0.16) / 3))
    assert s.estimate_max_m == pytest.approx(0.4)
    assert s.latency_ok is True
    assert summarise(vehicle_run(latency_budget_p99_ms=math.nan)).latency_ok is None
    slow = summarise(vehicle_run(latency_p99_ms=80.0))
    assert slow.latency_ok is False and slow.ok  # a warning, not a failure
    assert any("over its budget" in w for w in slow.warnings)


def test_tracking_is_measured_to_the_nearest_planned_path() -> None:
    # Driven 1 m north of the first path; a replanned path 0.25 m south of the truth
    # covers the second half only: 1 m off until the replan's start is nearer, 0.25 m
    # along it.
    replanned = np.array([[50.0, 0.75, 0.0], [100.0, 0.75, 0.0]])
    run = vehicle_run(truth=drive((0, 1, 0), (100, 1, 0), steps=200),
                      planned_paths=[vehicle_run().planned_paths[0], replanned])
    s = summarise(run)
    assert s.tracking_max_m == pytest.approx(1.0)
    errors = np.minimum(1.0, np.hypot(np.maximum(50.0 - run.truth[:, 1], 0.0), 0.25))
    assert s.tracking_rmse_m == pytest.approx(math.sqrt(np.mean(errors**2)))
    assert s.optimal_length_m == pytest.approx(100.0)  # the first path, not the replan


def test_leaving_the_fence_and_coming_back_is_one_breach_and_fails_the_run() -> None:
    s = summarise(excursion())
    assert s.breaches == 1 and s.ok_fence is False and not s.ok
    assert s.min_clearance_m == pytest.approx(-20.0)
    assert s.clearance_below_margin
    assert s.path_length_m == pytest.approx(210.0)
    assert s.path_ratio == pytest.approx(2.1)
    assert s.notable_events == ((14.0, "breach", "error", "left zone 'yard'"),)


@pytest.mark.parametrize(("xs", "breaches"), [
    ((0, 120, 0, 120, 0), 2),  # out twice
    ((120, 0), 1),  # starts outside: one breach at the first sample
    ((0, 110, 0), 0),  # touching the boundary is inside
])
def test_breaches_count_entries_into_forbidden_space(xs: tuple[float, ...],
                                                     breaches: int) -> None:
    truth = drive(*[(x, 0, 0) for x in xs])
    assert summarise(vehicle_run(truth=truth)).breaches == breaches


def test_close_to_the_fence_is_a_warning_below_margin_not_a_failure() -> None:
    s = summarise(vehicle_run(truth=drive((0, 0, 0), (108, 0, 0))))
    assert s.min_clearance_m == pytest.approx(2.0)
    assert s.clearance_below_margin and s.breaches == 0 and s.ok
    assert any("below its margin" in w for w in s.warnings)


def test_a_drone_is_measured_in_three_dimensions() -> None:
    s = summarise(drone(45.0))
    assert s.path_length_m == pytest.approx(75.0)  # 45 m up, 30 m across
    assert s.optimal_length_m == pytest.approx(75.0)
    assert s.min_clearance_m == pytest.approx(5.0)  # the ceiling, not the walls 20 m off
    assert s.breaches == 0 and s.clearance_below_margin and s.ok
    high = summarise(drone(55.0))
    assert high.breaches == 1 and not high.ok
    assert high.min_clearance_m == pytest.approx(-5.0)


def test_a_vehicle_with_nothing_recorded_gives_unknowns_not_errors() -> None:
    s = summarise(empty())
    for name in ("optimal_length_m", "path_ratio", "tracking_rmse_m", "min_clearance_m",
                 "solve_p50_ms", "solve_p99_ms", "estimate_rmse_m", "latency_p99_ms"):
        assert math.isnan(getattr(s, name)), name
    assert s.path_length_m == 0.0 and s.duration_s == 0.0
    assert (s.breaches, s.ok_fence, s.latency_ok, s.solver_ticks) == (None, None, None, 0)
    assert not s.clearance_below_margin
    assert not s.ok and s.failures == ["mission active (0/3 goals)"]
    assert "no geofence received: clearance not checked" in s.warnings
    assert row_cells(s)[3:9] == ["0.0 / - (-)", "- / -", "- (-)", "-", "- / - (0)", "- / -"]
    no_truth = summarise(replace(empty(), truth=np.zeros((0, 4)), fence=RECTANGLE))
    assert math.isnan(no_truth.path_length_m) and math.isnan(no_truth.duration_s)
    assert no_truth.breaches == 0


# -- the run --------------------------------------------------------------------------------


def test_the_fleet_is_ok_only_when_every_vehicle_is() -> None:
    assert fleet(vehicle_run(), drone(45.0)).ok
    mixed = fleet(vehicle_run(), excursion(), empty())
    assert not mixed.ok and mixed.failed == ["car2", "boat1"]
    assert not fleet().ok  # nothing observed proves nothing


def test_the_markdown_names_the_failures_and_their_events() -> None:
    text = render_markdown(fleet(vehicle_run(), excursion(), drone(45.0)))
    assert "**Result: FAIL**" in text
    assert "1 failed: car2" in text
    failures = text.split("## Failures")[1].split("##")[0]
    assert "**car2**: 1 geofence breach (min clearance -20.00 m); mission failed (1/2 goals)" \
        in failures
    assert "t=14.0 s error breach: left zone 'yard'" in failures
    assert "car1" not in failures and "uav1" not in failures
    assert "**uav1**: min clearance 5.00 m is below its margin 10.00 m" in text
    header = "| " + " | ".join(h for h, _ in COLUMNS) + " |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| car1 |")]
    assert rows == ["| " + " | ".join(row_cells(summarise(vehicle_run()))) + " |"]


def test_the_run_folder_holds_strict_json_markdown_and_a_png(tmp_path: Path) -> None:
    runs = [vehicle_run(), excursion(), drone(45.0), empty()]
    paths = write_run_folder(tmp_path / "run", fleet(*runs), runs)
    assert set(paths) == {"json", "markdown", "plot"}

    raw = paths["json"].read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    doc = json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert doc["ok"] is False and doc["failed"] == ["car2", "boat1"]
    by_id = {v["vehicle_id"]: v for v in doc["vehicles"]}
    assert list(by_id) == ["car1", "car2", "uav1", "boat1"]
    assert by_id["car2"]["breaches"] == 1 and by_id["car2"]["ok"] is False
    assert by_id["boat1"]["min_clearance_m"] is None and by_id["boat1"]["breaches"] is None
    assert by_id["car1"]["path_length_m"] == pytest.approx(100.0)
    assert doc["cpu_s"] is None and doc["seed"] == 7

    assert "car2" in paths["markdown"].read_text().split("## Failures")[1]

    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert (width, height) == (FIGSIZE_IN[0] * DPI, FIGSIZE_IN[1] * DPI)
    assert len(png) > 20_000  # zones and four trajectories, not a blank canvas


def test_the_plot_draws_each_zone_once_and_circles_as_circles() -> None:
    # car1 and car2 share RECTANGLE: its two zones, plus the drone's box, three patches.
    fig = trajectory_figure([vehicle_run(), excursion(), drone(45.0), empty()], "t")
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert len(circles) == 1 and circles[0].get_radius() == 3.0
    assert circles[0].get_hatch() == "//"  # an exclusion
    assert "box\nbelow 50 m" in [t.get_text() for t in ax.texts]  # the drone's ceiling
    labels = ax.get_legend_handles_labels()[1]
    assert {"car1 (car)", "car2 (car)", "uav1 (quadrotor)", "boat1 (vessel)"} <= set(labels)


def test_the_terminal_table_shows_every_vehicle_and_its_verdict() -> None:
    summary = fleet(vehicle_run(), excursion(), replace(empty(), vehicle_id="boat[1]"))
    console = Console(record=True, width=300)
    console.print(render_table(summary))
    text = console.export_text()
    for vehicle_id in ("car1", "car2", "boat[1]"):  # brackets are not taken as markup
        assert vehicle_id in text
    car1 = next(line for line in text.splitlines() if "car1" in line)
    car2 = next(line for line in text.splitlines() if "car2" in line)
    assert "OK" in car1 and "FAIL" not in car1 and "FAIL" in car2
    assert "mixed_fleet: FAIL" in text
