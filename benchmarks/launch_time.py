"""Time from launching a 20-node graph to every node registered, and to a clean stop.

    python -m benchmarks.launch_time [--nodes 20] [--rounds 3]

The floor is what no launcher can beat on this machine: the same number of Python
interpreters importing the worker's modules, in parallel, and exiting. Also measured:
the same nodes in process groups of five (one process per group).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.launch.graph import Graph
from fleetbus.launch.supervisor import Supervisor


def interpreters_s(count: int) -> float:
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", "import fleetbus.launch.worker"])
             for _ in range(count)]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - started


def launch_s(count: int, group_size: int) -> tuple[float, float]:
    """(seconds until all nodes registered, seconds from stop() until run() returned)."""
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fbl-", dir="/tmp")
    config = BusConfig.from_env()
    graph = Graph("bench")
    for i in range(count):
        group = f"g{i // group_size}" if group_size > 1 else None
        graph.add(f"n{i}", "fleetbus.nodes.demo:Talker", params={"rate_hz": 10.0},
                  process=group)
    supervisor = Supervisor(graph, config, out=io.StringIO())
    returned = threading.Event()
    started = time.perf_counter()
    threading.Thread(target=lambda: (supervisor.run(), returned.set()), daemon=True).start()
    while True:
        graph_now = fetch_graph(config, 0.2)
        if graph_now is not None and len(graph_now.nodes) >= count:
            break
        time.sleep(0.01)
    ready = time.perf_counter() - started
    stopping = time.perf_counter()
    supervisor.stop()
    returned.wait(60)
    return ready, time.perf_counter() - stopping


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = {"floor: bare interpreters": [], "one process per node": [],
            "process groups of 5": []}
    stops = {"one process per node": [], "process groups of 5": []}
    for _ in range(args.rounds):
        rows["floor: bare interpreters"].append(interpreters_s(args.nodes))
        for name, group in (("one process per node", 1), ("process groups of 5", 5)):
            ready, stop = launch_s(args.nodes, group)
            rows[name].append(ready)
            stops[name].append(stop)
    floor = float(np.median(rows["floor: bare interpreters"]))
    table = Table(title=f"{args.nodes}-node graph, median of {args.rounds}",
                  title_justify="left")
    for column in ("how", "up (all registered)", "ratio to floor", "shutdown"):
        table.add_column(column)
    for name, values in rows.items():
        up = float(np.median(values))
        stop = f"{np.median(stops[name]):.2f} s" if name in stops else "-"
        table.add_row(name, f"{up:.2f} s", f"{up / floor:.2f}", stop)
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
