"""`make demo`: a mixed fleet flies, sails and drives its missions through one geofence on
the whole stack, in lockstep, and the run is judged.

It launches a graph (`launch/fleet.yaml` by default: three drones, two ships, two cars),
shows each vehicle's mission progress, stops when every mission has ended (or at
`--max-sim-s`), then prints a per-vehicle table -- goals, path length against the
planner's optimum, tracking error, least geofence clearance, breaches, MPC solve times,
estimator error, sensor-to-command latency against the graph's budget -- and writes a run
folder with the trajectories over the fences (PNG), the summary (Markdown and JSON), the
launch log and the whole run recorded on sim time (run.mcap: `fleetbus play` replays it,
`fleetbus replay-check` checks a node against it; --no-record skips it). The exit status
is 1 when any vehicle breached its fence or did not complete its mission.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fleetbus.bus.config import BusConfig
from fleetbus.launch.graph import Graph
from fleetbus.launch.mission_run import graph_vehicles, run_missions
from fleetbus.messages import MissionStatus
from fleetbus.missions.report import render_table, write_run_folder

ROOT = Path(__file__).resolve().parent.parent


def _bars(vehicles: list[str], max_sim_s: float, console: Console) -> tuple[Progress, Callable]:
    """Mission progress bars per vehicle and one for the sim clock, and their updater."""
    bars = Progress(TextColumn("{task.description:>8}"), BarColumn(),
                    TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                    console=console, transient=False)
    tasks = {v: bars.add_task(v, total=1, state="starting") for v in vehicles}
    clock = bars.add_task("sim", total=max_sim_s, state="")

    def update(status: dict[str, MissionStatus | None], sim_s: float) -> None:
        for vid, s in status.items():
            if s is not None:
                bars.update(tasks[vid], total=max(s.waypoints, 1), completed=s.waypoint,
                            state=f"{s.state} {s.waypoint}/{s.waypoints}")
        bars.update(clock, completed=min(sim_s, max_sim_s), state=f"{sim_s:6.1f} s")

    return bars, update


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default=str(ROOT / "launch" / "fleet.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="graph argument, e.g. seed=2")
    parser.add_argument("--out", default=str(ROOT / "runs"), help="where run folders go")
    parser.add_argument("--max-sim-s", type=float, default=400.0)
    parser.add_argument("--max-wall-s", type=float, default=1800.0)
    parser.add_argument("--no-record", action="store_true",
                        help="skip the run's MCAP recording (run.mcap in the run folder)")
    args = parser.parse_args(argv)
    # a TERM (a CI job cancelled, `kill`) unwinds like Ctrl-C: the graph's processes run in
    # sessions of their own and would outlive an abrupt exit
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    console = Console()
    graph = Graph.load(args.graph, sets=args.set)
    vehicles = [v["id"] for v in graph_vehicles(graph)]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(args.out) / f"{graph.name}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fleetbus-demo-")
    console.print(f"[bold]{graph.name}[/]: {len(vehicles)} vehicles, {len(graph.nodes)} "
                  f"nodes, lockstep; logs in {folder / 'launch.log'}")
    bars, update = _bars(vehicles, args.max_sim_s, console)
    with open(folder / "launch.log", "w") as log, bars:
        result = run_missions(graph, BusConfig.from_env(), log, max_sim_s=args.max_sim_s,
                              max_wall_s=args.max_wall_s, progress=update,
                              record=None if args.no_record else folder / "run.mcap")
    summary, runs = result.summary, result.runs
    written = write_run_folder(folder, summary, runs)
    if not args.no_record:
        written["recording"] = folder / "run.mcap"
    console.print(render_table(summary))
    for kind, path in written.items():
        console.print(f"{kind}: {path}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
