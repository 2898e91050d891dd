"""`make demo`: a mixed fleet flies, sails and drives its missions through one geofence on
the whole stack, in lockstep, and the run is judged.

It launches a graph (`launch/fleet.yaml` by default: three drones, two ships, two cars),
shows each vehicle's mission progress, stops when every mission has ended (or at
`--max-sim-s`), then prints a per-vehicle table -- goals, path length against the
planner's optimum, tracking error, least geofence clearance, breaches, MPC solve times,
estimator error, sensor-to-command latency against the graph's budget -- and writes a run
folder with the trajectories over the fences (PNG), the summary (Markdown and JSON) and
the launch log. The exit status is 1 when any vehicle breached its fence or did not
complete its mission.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fleetbus.bus.config import BusConfig
from fleetbus.bus.runner import start
from fleetbus.launch.graph import Graph
from fleetbus.launch.supervisor import Supervisor
from fleetbus.missions.report import RunSummary, render_table, summarise, write_run_folder
from fleetbus.nodes.run_observer import RunObserver

ROOT = Path(__file__).resolve().parent.parent
ENDED = ("completed", "failed")


def _cpu_s() -> float:
    """CPU time of this process and its reaped children (the graph's processes)."""
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                     resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _watch(observer: RunObserver, vehicles: list[str], max_sim_s: float,
           max_wall_s: float, console: Console) -> str:
    """Mission progress bars until every mission ended; returns why the run stopped."""
    began = time.monotonic()
    with Progress(TextColumn("{task.description:>8}"), BarColumn(),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(),
                  console=console, transient=False) as bars:
        tasks = {v: bars.add_task(v, total=1, state="starting") for v in vehicles}
        clock = bars.add_task("sim", total=max_sim_s, state="")
        while True:
            progress = observer.progress()
            for vid, status in progress.items():
                if status is not None:
                    bars.update(tasks[vid], total=max(status.waypoints, 1),
                                completed=status.waypoint,
                                state=f"{status.state} {status.waypoint}/{status.waypoints}")
            sim_s = observer.sim_time_s()
            bars.update(clock, completed=min(sim_s, max_sim_s), state=f"{sim_s:6.1f} s")
            if all(s is not None and s.state in ENDED for s in progress.values()):
                return "every mission ended"
            if sim_s >= max_sim_s:
                return f"sim time limit {max_sim_s:.0f} s"
            if time.monotonic() - began > max_wall_s:
                return f"wall time limit {max_wall_s:.0f} s"
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default=str(ROOT / "launch" / "fleet.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="graph argument, e.g. seed=2")
    parser.add_argument("--out", default=str(ROOT / "runs"), help="where run folders go")
    parser.add_argument("--max-sim-s", type=float, default=400.0)
    parser.add_argument("--max-wall-s", type=float, default=1800.0)
    args = parser.parse_args(argv)
    console = Console()
    graph = Graph.load(args.graph, sets=args.set)
    sim = next(n for n in graph.nodes if n.node_class == "fleetbus.nodes.simulator:Simulator")
    vehicles = [{"id": v["id"], "type": v["type"]} for v in sim.params["vehicles"]]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(args.out) / f"{graph.name}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fleetbus-demo-")
    config = BusConfig.from_env()
    console.print(f"[bold]{graph.name}[/]: {len(vehicles)} vehicles, {len(graph.nodes)} "
                  f"nodes, lockstep; logs in {folder / 'launch.log'}")
    cpu0, wall0 = _cpu_s(), time.monotonic()
    with open(folder / "launch.log", "w") as log:
        supervisor = Supervisor(graph, config, out=log)
        runner = threading.Thread(target=supervisor.run, name="launch", daemon=True)
        runner.start()
        observer = RunObserver("/_demo_observer", params={"vehicles": vehicles},
                               config=config)
        try:
            with start(observer):
                why = _watch(observer, [v["id"] for v in vehicles], args.max_sim_s,
                             args.max_wall_s, console)
                runs = observer.runs()
                sim_s = observer.sim_time_s()
        finally:
            supervisor.stop()
            runner.join(60)
    wall_s = time.monotonic() - wall0
    summary = RunSummary(
        vehicles=[summarise(run) for run in runs], graph=graph.name,
        seed=sim.params.get("seed"),
        sim_time_s=sim_s, wall_time_s=wall_s,
        real_time_factor=sim_s / wall_s if wall_s > 0 else float("nan"),
        cpu_s=_cpu_s() - cpu0, notes=[f"stopped: {why}"])
    written = write_run_folder(folder, summary, runs)
    console.print(render_table(summary))
    for kind, path in written.items():
        console.print(f"{kind}: {path}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
