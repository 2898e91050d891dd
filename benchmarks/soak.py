"""Soak: the fleet graph for minutes on end, with the memory of every process over time.

    python -m benchmarks.soak [--minutes 10] [--every 10] [--graph launch/fleet.yaml]

Runs the graph as `make demo` does (lockstep, the missions, then the vehicles holding where
they ended) for the given wall time, samples each process's resident memory (RSS, from
psutil) every `--every` seconds, and reports per process: the first, last and highest
RSS, and the growth over the second half of the run (a leak grows there; start-up
allocations do not); processes gone before the second half (the jit compiler, say) are
marked as ended instead. Not part of `make test` or `make bench`: it takes minutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks.fleet_rtf import worker_name
from fleetbus.bus.config import BusConfig
from fleetbus.launch.graph import Graph
from fleetbus.launch.supervisor import Supervisor

ROOT = Path(__file__).resolve().parent.parent
COMPILER = {"gcc", "cc", "cc1", "as", "ld", "collect2"}
HUNG = "no answer in"  # how the MPC logs a solve ended for not answering


def _name(proc: psutil.Process) -> str:
    """A worker's vehicle or node name, from the node specs on its command line; a
    controller's solver process by its worker's; the jit compiler's processes as one."""
    cmdline = proc.cmdline()
    parent = proc.parent()
    if parent is not None and any(arg.endswith("solver_process.py") for arg in cmdline[:3]):
        return f"{_name(parent)} solver"
    if cmdline and Path(cmdline[0]).name in COMPILER:
        return "jit compiler (gcc)"
    return worker_name(cmdline[3]) if len(cmdline) > 3 else f"pid {proc.pid}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", default=str(ROOT / "launch" / "fleet.yaml"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0, help="s between samples")
    args = parser.parse_args()
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fleetbus-soak-")
    log_path = Path(tempfile.mkdtemp(prefix="fleetbus-soak-log-")) / "launch.log"
    graph = Graph.load(args.graph)
    log = open(log_path, "w")  # noqa: SIM115 -- the nodes' output, kept for the report
    supervisor = Supervisor(graph, BusConfig.from_env(), out=log)
    runner = threading.Thread(target=supervisor.run, daemon=True)
    runner.start()
    me = psutil.Process()
    samples: dict[str, list[tuple[float, float]]] = {}
    began = time.monotonic()
    console = Console()
    try:
        while (elapsed := time.monotonic() - began) < args.minutes * 60:
            for proc in me.children(recursive=True):
                try:
                    rss = proc.memory_info().rss / 2**20
                    samples.setdefault(_name(proc), []).append((elapsed, rss))
                except psutil.Error:
                    continue  # gone meanwhile (a restart)
            console.print(f"{elapsed / 60:5.1f} min: {len(samples)} processes, "
                          f"{sum(s[-1][1] for s in samples.values()):.0f} MiB", highlight=False)
            time.sleep(args.every)
    finally:
        supervisor.stop()
        runner.join(60)
        log.close()
    table = Table(title=f"RSS over {args.minutes:g} min of {graph.name} (MiB)")
    for column in ("process", "first", "last", "peak", "growth, 2nd half", "per hour"):
        table.add_column(column, justify="right")
    end = max(rows[-1][0] for rows in samples.values())
    for name, rows in sorted(samples.items()):
        peak = f"{max(r[1] for r in rows):.1f}"
        if rows[-1][0] < end / 2:  # gone early: a compiler, a process killed and replaced
            table.add_row(name, f"{rows[0][1]:.1f}", f"{rows[-1][1]:.1f}", peak,
                          f"ended at {rows[-1][0] / 60:.1f} min", "")
            continue
        half = [r for r in rows if r[0] >= end / 2]
        grown = half[-1][1] - half[0][1]
        span_h = max(half[-1][0] - half[0][0], 1e-9) / 3600
        table.add_row(name, f"{rows[0][1]:.1f}", f"{rows[-1][1]:.1f}", peak,
                      f"{grown:+.1f}", f"{grown / span_h:+.1f}")
    console.print(table)
    hung = [line.strip() for line in log_path.read_text(errors="replace").splitlines()
            if HUNG in line]
    console.print(f"solves ended for not answering: {len(hung)}; the nodes' log: {log_path}",
                  highlight=False)
    for line in hung:
        console.print(f"  {line}", highlight=False, markup=False)


if __name__ == "__main__":
    main()
