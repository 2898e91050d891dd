"""The mission run report: per-vehicle metrics from what an observer recorded during a run,
and the run folder written from them (summary.json, summary.md, trajectories.png).

Pure library, no bus imports: the observer node fills `VehicleRun`s, `summarise` turns
each into a `VehicleSummary`, and the same numbers go to the terminal (`render_table`), to
Markdown and to JSON, so a run can be judged without re-running it.

A vehicle fails its run when its mission did not complete or when it left its geofence;
clearance below the vehicle's own margin and latency over budget are reported as warnings,
because they are goals the stack aims for, not limits the run was allowed to break.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from rich.table import Table
from rich.text import Text

from fleetbus.missions.plot import plot_trajectories
from fleetbus.planners import Geofence

THREE_D_TYPES = frozenset({"quadrotor"})  # vehicles whose altitude is part of the mission
NOTABLE_SEVERITIES = frozenset({"error", "critical"})  # events quoted with the failures
EVENTS_QUOTED = 5  # per failed vehicle in the Markdown; the JSON holds them all

Event = tuple[float, str, str, str]  # (t_s, kind, severity, message)


@dataclass
class VehicleRun:
    """What the observer recorded about one vehicle over the whole run."""

    vehicle_id: str
    vehicle_type: str  # quadrotor | vessel | car
    truth: np.ndarray  # (N, 4): t_s, x, y, z ENU m, ground truth, time-ordered
    estimate_error_m: list[float]  # horizontal |estimate - truth| at matched stamps
    planned_paths: list[np.ndarray]  # each (M, 3) ENU: every path the planner published
    fence: Geofence | None  # the zones that bind this vehicle (ENU), None if none arrived
    margin_m: float  # the clearance the vehicle must keep (its guard's margin); nan if unknown
    solve_ms: list[float]  # MPC solve time per control tick that ran the solver
    waypoints_total: int
    waypoints_reached: int
    mission_state: str  # final MissionStatus.state: completed | failed | active | ...
    events: list[Event]  # (t_s, kind, severity, message) about this vehicle
    latency_p50_ms: float  # sensor-to-command chain, whole run; nan if unknown
    latency_p99_ms: float
    latency_budget_p99_ms: float  # nan if no budget declared


@dataclass(frozen=True)
class VehicleSummary:
    """One vehicle's metrics. NaN means "not measurable from what was recorded"."""

    vehicle_id: str
    vehicle_type: str
    waypoints_reached: int
    waypoints_total: int
    mission_state: str
    ok_mission: bool
    path_length_m: float  # driven: 3-D for quadrotors, horizontal otherwise
    optimal_length_m: float  # the first planned path, measured the same way
    path_ratio: float  # driven / optimal
    tracking_rmse_m: float  # horizontal, to the nearest of all planned paths
    tracking_max_m: float
    min_clearance_m: float  # signed distance to the fence boundary, positive inside
    margin_m: float
    breaches: int | None  # None: no fence to check against
    clearance_below_margin: bool
    ok_fence: bool | None  # None: no fence to check against
    solve_p50_ms: float
    solve_p99_ms: float
    solver_ticks: int
    estimate_rmse_m: float
    estimate_max_m: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_budget_p99_ms: float
    latency_ok: bool | None  # None: no budget declared or no latency measured
    duration_s: float
    notable_events: tuple[Event, ...] = field(default=())  # severity error or critical

    @property
    def ok(self) -> bool:
        """Completed its mission and never left its fence (an unchecked fence is no fault)."""
        return self.ok_mission and self.ok_fence is not False

    @property
    def failures(self) -> list[str]:
        """Why the vehicle failed its run, in words; empty when it did not."""
        out = []
        if self.breaches:
            out.append(f"{self.breaches} geofence breach{'es' if self.breaches > 1 else ''} "
                       f"(min clearance {_fmt(self.min_clearance_m, 2)} m)")
        if not self.ok_mission:
            out.append(f"mission {self.mission_state} "
                       f"({self.waypoints_reached}/{self.waypoints_total} goals)")
        return out

    @property
    def warnings(self) -> list[str]:
        """What was not as intended without failing the run."""
        out = []
        if self.ok_fence is None:
            out.append("no geofence received: clearance not checked")
        if self.clearance_below_margin and not self.breaches:  # a breach says more
            out.append(f"min clearance {_fmt(self.min_clearance_m, 2)} m is below its margin "
                       f"{_fmt(self.margin_m, 2)} m")
        if self.latency_ok is False:
            out.append(f"latency p99 {_fmt(self.latency_p99_ms)} ms is over its budget "
                       f"{_fmt(self.latency_budget_p99_ms)} ms")
        return out


@dataclass(frozen=True)
class RunSummary:
    """The whole run: every vehicle and how the simulation went."""

    vehicles: list[VehicleSummary]
    graph: str
    seed: int | None
    sim_time_s: float
    wall_time_s: float
    real_time_factor: float
    cpu_s: float | None
    notes: list[str]

    @property
    def ok(self) -> bool:
        """Every mission completed and no breach; a run that observed no vehicle proved
        nothing, so it is not ok."""
        return bool(self.vehicles) and all(v.ok for v in self.vehicles)

    @property
    def failed(self) -> list[str]:
        return [v.vehicle_id for v in self.vehicles if not v.ok]


# -- metrics ---------------------------------------------------------------------------------


def summarise(run: VehicleRun) -> VehicleSummary:
    """The metrics of one vehicle's run (see the module docstring for what fails a run)."""
    truth = np.asarray(run.truth, float).reshape(-1, 4)
    dims = 3 if run.vehicle_type in THREE_D_TYPES else 2
    driven = _polyline_length(truth[:, 1:1 + dims])
    first_plan = _finite_rows(run.planned_paths[0]) if run.planned_paths else np.zeros((0, 3))
    optimal = _polyline_length(first_plan[:, :dims])
    tracking_rmse, tracking_max = _rms_max(_tracking_errors(truth[:, 1:3], run.planned_paths))
    min_clearance, breaches = _fence_check(run.fence, truth[:, 1:1 + dims])
    solve_p50, solve_p99 = _p50_p99(run.solve_ms)
    estimate_rmse, estimate_max = _rms_max(np.asarray(run.estimate_error_m, float))
    return VehicleSummary(
        vehicle_id=run.vehicle_id,
        vehicle_type=run.vehicle_type,
        waypoints_reached=int(run.waypoints_reached),
        waypoints_total=int(run.waypoints_total),
        mission_state=run.mission_state,
        ok_mission=run.mission_state == "completed",
        path_length_m=driven,
        optimal_length_m=optimal,
        path_ratio=driven / optimal if optimal > 0.0 else math.nan,
        tracking_rmse_m=tracking_rmse,
        tracking_max_m=tracking_max,
        min_clearance_m=min_clearance,
        margin_m=float(run.margin_m),
        breaches=breaches,
        clearance_below_margin=bool(min_clearance < run.margin_m),  # False when either is NaN
        ok_fence=None if breaches is None else breaches == 0,
        solve_p50_ms=solve_p50,
        solve_p99_ms=solve_p99,
        solver_ticks=len(run.solve_ms),
        estimate_rmse_m=estimate_rmse,
        estimate_max_m=estimate_max,
        latency_p50_ms=float(run.latency_p50_ms),
        latency_p99_ms=float(run.latency_p99_ms),
        latency_budget_p99_ms=float(run.latency_budget_p99_ms),
        latency_ok=_within(run.latency_p99_ms, run.latency_budget_p99_ms),
        duration_s=float(truth[-1, 0] - truth[0, 0]) if len(truth) else math.nan,
        notable_events=tuple(e for e in run.events if e[2] in NOTABLE_SEVERITIES),
    )


def _finite_rows(path: np.ndarray) -> np.ndarray:
    """A planned path's (M, 3) points without the non-finite ones (no length, no distance)."""
    pts = np.asarray(path, float).reshape(-1, 3)
    return pts[np.isfinite(pts).all(axis=1)]


def _polyline_length(points: np.ndarray) -> float:
    """Sum of segment lengths; NaN with no point at all (nothing was driven or planned)."""
    if len(points) == 0:
        return math.nan
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())


def _tracking_errors(xy: np.ndarray, paths: Sequence[np.ndarray]) -> np.ndarray:
    """Horizontal distance of each truth position to the nearest segment of ANY planned
    path. Which path was in force when is not recorded, so this is a lower bound on the
    error against the path actually being followed: a vehicle on a superseded path counts
    as on track. Segments go into an R-tree so long runs with many replans stay cheap."""
    segments = [_segments(_finite_rows(p)[:, :2]) for p in paths]
    segments = [s for s in segments if len(s)]
    if not segments or len(xy) == 0:
        return np.zeros(0)
    tree = shapely.STRtree(shapely.linestrings(np.concatenate(segments)))
    _, dist = tree.query_nearest(shapely.points(xy), return_distance=True, all_matches=False)
    return dist


def _segments(xy: np.ndarray) -> np.ndarray:
    """(E, 2, 2) segments of a polyline; a one-point path is one degenerate segment so its
    distance is still measured."""
    if len(xy) == 1:
        xy = np.repeat(xy, 2, axis=0)
    return np.stack([xy[:-1], xy[1:]], axis=1)


def _fence_check(fence: Geofence | None, points: np.ndarray) -> tuple[float, int | None]:
    """(min signed clearance m, breaches). A breach is an entry into space the fence does
    not allow; the vehicle is taken to start allowed, so a run starting outside counts
    one breach at its first sample. 3-D points check the altitude bands as well."""
    if fence is None:
        return math.nan, None
    if len(points) == 0:
        return math.nan, 0
    outside = ~fence.contains(points)
    breaches = int(np.count_nonzero(np.diff(outside.astype(int), prepend=0) == 1))
    return float(np.min(fence.signed_distance(points))), breaches


def _rms_max(errors: np.ndarray) -> tuple[float, float]:
    if len(errors) == 0:
        return math.nan, math.nan
    return float(np.sqrt(np.mean(np.square(errors)))), float(np.max(errors))


def _p50_p99(values: Sequence[float]) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.asarray(values, float), [50, 99])
    return float(p50), float(p99)


def _within(value: float, budget: float) -> bool | None:
    if math.isnan(budget) or math.isnan(value):
        return None
    return bool(value <= budget)


# -- presentation ----------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table cell; '-' for unknown (None or NaN)."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def _goals(v: VehicleSummary) -> str:
    return f"{v.waypoints_reached}/{v.waypoints_total} {v.mission_state}"


def _path(v: VehicleSummary) -> str:
    ratio = "-" if math.isnan(v.path_ratio) else f"{v.path_ratio:.2f}x"
    return f"{_fmt(v.path_length_m)} / {_fmt(v.optimal_length_m)} ({ratio})"


def _clearance(v: VehicleSummary) -> str:
    low = " below margin" if v.clearance_below_margin else ""
    return f"{_fmt(v.min_clearance_m, 2)} ({_fmt(v.margin_m, 2)}){low}"


def _latency(v: VehicleSummary) -> str:
    over = " over" if v.latency_ok is False else ""
    return (f"{_fmt(v.latency_p50_ms)} / {_fmt(v.latency_p99_ms)} "
            f"({_fmt(v.latency_budget_p99_ms)}){over}")


# One definition of the per-vehicle columns, shared by the terminal and the Markdown table.
COLUMNS: tuple[tuple[str, Callable[[VehicleSummary], str]], ...] = (
    ("vehicle", lambda v: v.vehicle_id),
    ("type", lambda v: v.vehicle_type),
    ("goals", _goals),
    ("path / optimal m (ratio)", _path),
    ("tracking RMSE / max m", lambda v: f"{_fmt(v.tracking_rmse_m, 2)} / "
                                        f"{_fmt(v.tracking_max_m, 2)}"),
    ("min clearance m (margin m)", _clearance),
    ("breaches", lambda v: "-" if v.breaches is None else str(v.breaches)),
    ("MPC p50 / p99 ms (ticks)", lambda v: f"{_fmt(v.solve_p50_ms)} / {_fmt(v.solve_p99_ms)} "
                                           f"({v.solver_ticks})"),
    ("est. RMSE / max m", lambda v: f"{_fmt(v.estimate_rmse_m, 2)} / "
                                    f"{_fmt(v.estimate_max_m, 2)}"),
    ("latency p50 / p99 ms (budget p99 ms)", _latency),
    ("duration s", lambda v: _fmt(v.duration_s)),
    ("result", lambda v: "OK" if v.ok else "FAIL"),
)


def row_cells(v: VehicleSummary) -> list[str]:
    """The table cells of one vehicle, in COLUMNS order."""
    return [cell(v) for _, cell in COLUMNS]


def _fleet_line(summary: RunSummary) -> str:
    failed = summary.failed
    who = f", {len(failed)} failed: {', '.join(failed)}" if failed else ""
    cpu = f", CPU {_fmt(summary.cpu_s)} s" if summary.cpu_s is not None else ""
    seed = f", seed {summary.seed}" if summary.seed is not None else ""
    return (f"{len(summary.vehicles)} vehicles{who}. Sim time {_fmt(summary.sim_time_s)} s, "
            f"wall time {_fmt(summary.wall_time_s)} s (real-time factor "
            f"{_fmt(summary.real_time_factor, 2)}x){cpu}{seed}.")


def render_table(summary: RunSummary) -> Table:
    """The per-vehicle table for the terminal; cells are Text so ids are never markup."""
    verdict = "OK" if summary.ok else "FAIL"
    table = Table(title=f"{summary.graph}: {verdict}", caption=_fleet_line(summary),
                  title_justify="left", caption_justify="left")
    for header, _ in COLUMNS:
        table.add_column(header)
    for v in summary.vehicles:
        cells = [Text(c) for c in row_cells(v)]
        cells[-1].stylize("green" if v.ok else "bold red")
        table.add_row(*cells)
    return table


def render_markdown(summary: RunSummary, plot_name: str = "trajectories.png") -> str:
    """The run report in Markdown: verdict and fleet line, the per-vehicle table, then the
    failures by vehicle (with their error events), the warnings and the notes."""
    lines = [f"# Run report: {summary.graph}", "",
             f"**Result: {'OK' if summary.ok else 'FAIL'}** - {_fleet_line(summary)}", "",
             _md_row([h for h, _ in COLUMNS]), _md_row(["---"] * len(COLUMNS))]
    lines += [_md_row(row_cells(v)) for v in summary.vehicles]
    failed = [v for v in summary.vehicles if not v.ok]
    if failed:
        lines += ["", "## Failures", ""]
        for v in failed:
            lines.append(f"- **{v.vehicle_id}**: {'; '.join(v.failures)}")
            lines += [f"  - t={t:.1f} s {severity} {kind}: {message}"
                      for t, kind, severity, message in v.notable_events[:EVENTS_QUOTED]]
            more = len(v.notable_events) - EVENTS_QUOTED
            if more > 0:
                lines.append(f"  - ... and {more} more (summary.json)")
    warned = [(v.vehicle_id, w) for v in summary.vehicles for w in v.warnings]
    if warned:
        lines += ["", "## Warnings", ""] + [f"- **{vid}**: {w}" for vid, w in warned]
    if summary.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in summary.notes]
    lines += ["", f"![trajectories]({plot_name})", ""]
    return "\n".join(lines)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    """The run as plain JSON values: unknown numbers (NaN, inf) become null."""
    vehicles = [{**asdict(v), "ok": v.ok, "failures": v.failures, "warnings": v.warnings}
                for v in summary.vehicles]
    body = {**asdict(summary), "ok": summary.ok, "failed": summary.failed,
            "vehicles": vehicles}
    return _jsonable(body)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_run_folder(folder: Path, summary: RunSummary,
                     runs: list[VehicleRun]) -> dict[str, Path]:
    """Write summary.json, summary.md and trajectories.png into `folder` (created if
    missing) and return their paths by kind: "json", "markdown", "plot"."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "summary.json", "markdown": folder / "summary.md",
             "plot": folder / "trajectories.png"}
    paths["json"].write_text(json.dumps(summary_dict(summary), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(render_markdown(summary, paths["plot"].name))
    plot_trajectories(paths["plot"], runs,
                      f"{summary.graph} - sim time {_fmt(summary.sim_time_s)} s")
    return paths
