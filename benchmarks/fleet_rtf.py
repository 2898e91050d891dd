"""Real-time factor and CPU cost of the mission graphs on the whole stack, in lockstep.

    python -m benchmarks.fleet_rtf [--sim-seconds 60] [--graphs car_route fleet]

Each graph runs from launch for the given sim time (or until its missions end) exactly as
`make demo` runs it: simulator, geofence server and, per vehicle, fusion, planner, MPC
controller, guard and mission manager. Reported per graph: sim and wall time, the
real-time factor, CPU seconds per sim second and per vehicle-second, and where the CPU
went (per process, from /proc, sampled while the graph runs). The floor is
`benchmarks.sim_rtf`: the same simulator with trivial controllers.
"""

from __future__ import annotations

import argparse
import collections
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.launch.graph import Graph
from fleetbus.launch.mission_run import graph_vehicles, run_missions

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process's children, by pid, with a name: the worker's
    node names (the vehicle id for a vehicle's process)."""
    me, out = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) != me:
                continue
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # gone meanwhile
        spec = cmdline[3].decode(errors="replace") if len(cmdline) > 3 else ""
        out[int(entry.name)] = (worker_name(spec), (int(fields[11]) + int(fields[12])) / TICKS)
    return out


def worker_name(spec: str) -> str:
    """What a worker runs, from its node specs: a vehicle's id, else the node's name."""
    for key in ('"namespace":"', '"name":"'):
        at = spec.find(key)
        if at >= 0:
            value = spec[at + len(key): spec.index('"', at + len(key))]
            if value:
                return value
    return "other"


def run(graph_file: Path, sim_seconds: float) -> dict:
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fleetbus-rtf-")
    graph = Graph.load(graph_file)
    vehicles = graph_vehicles(graph)
    seen: dict[int, tuple[str, float]] = {}

    def sample(_status: object, _sim_s: float) -> None:
        seen.update(_children_cpu())

    with open(os.devnull, "w") as log:
        result = run_missions(graph, BusConfig.from_env(), log, max_sim_s=sim_seconds,
                              max_wall_s=3600, progress=sample)
    s = result.summary
    per_process = collections.Counter()
    for name, cpu in seen.values():
        per_process[name] += cpu
    return {"graph": graph.name, "vehicles": len(vehicles), "sim_s": s.sim_time_s,
            "wall_s": s.wall_time_s, "rtf": s.real_time_factor, "cpu_s": s.cpu_s,
            "per_process": dict(per_process.most_common())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sim-seconds", type=float, default=60.0)
    parser.add_argument("--graphs", nargs="+", default=["car_route", "fleet"])
    args = parser.parse_args()
    console = Console()
    rows = [run(ROOT / "launch" / f"{g}.yaml", args.sim_seconds) for g in args.graphs]
    table = Table(title="Mission graphs in lockstep (whole stack)")
    for column in ("graph", "vehicles", "sim s", "wall s", "real-time factor",
                   "CPU s / sim s", "CPU s / vehicle-s"):
        table.add_column(column, justify="right")
    for r in rows:
        cpu_rate = r["cpu_s"] / r["sim_s"]
        table.add_row(r["graph"], str(r["vehicles"]), f"{r['sim_s']:.1f}", f"{r['wall_s']:.1f}",
                      f"{r['rtf']:.2f}x", f"{cpu_rate:.2f}", f"{cpu_rate / r['vehicles']:.3f}")
    console.print(table)
    for r in rows:
        shares = ", ".join(f"{name} {cpu / r['sim_s']:.3f}" for name, cpu in
                           r["per_process"].items())
        console.print(f"{r['graph']}: CPU s per sim s by process: {shares}")
    console.print(f"goal: 20x real time for fleet; {os.cpu_count()} CPUs here")


if __name__ == "__main__":
    main()
