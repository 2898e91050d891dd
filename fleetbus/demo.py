"""`make demo`: a talker → echo → listener graph in three processes, with live rates and
the chain latency for a few seconds. (The mission demo replaces this once the autonomy
stack exists.)"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.bus.introspect import topics
from fleetbus.bus.node import Node
from fleetbus.bus.registry import Registry
from fleetbus.bus.registry_client import fetch_graph
from fleetbus.bus.runner import start
from fleetbus.messages import Diagnostic

NODES = ("Talker", "Echo", "Listener")


class _Watcher(Node):
    """Keeps the listener's latest latency report for the display."""

    def setup(self) -> None:
        self.latest: dict[str, str] = {}
        self.subscribe("/latency", Diagnostic, self.on_report)

    def on_report(self, msg: Diagnostic) -> None:
        self.latest = dict(msg.values)


def _view(config: BusConfig, watcher: _Watcher, elapsed: float) -> Table:
    table = Table(title=f"fleetbus demo — {elapsed:4.1f} s", title_justify="left")
    for column in ("topic", "publisher", "rate", "bandwidth", "subscribers", "gaps"):
        table.add_column(column)
    graph = fetch_graph(config, 0.5)
    if graph is not None:
        for view in topics(graph).values():
            for node, pub in view.publishers:
                gaps = sum(sub.gaps for _, sub in view.subscriptions)
                table.add_row(view.topic, node, f"{pub.rate_hz:.0f} Hz",
                              f"{pub.bandwidth_bps / 1e3:.0f} KB/s", str(pub.subscribers),
                              str(gaps))
    lat = watcher.latest
    table.caption = (
        f"chain latency (2 hops, 3 processes, ipc): p50 {lat.get('p50_us', '-')} µs, "
        f"p99 {lat.get('p99_us', '-')} µs, max {lat.get('max_us', '-')} µs; "
        f"received {lat.get('received', '0')}"
        if lat else "waiting for the first latency report…"
    )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=200.0, help="talker rate in Hz")
    args = parser.parse_args(argv)
    os.environ["FLEETBUS_RUN_DIR"] = tempfile.mkdtemp(prefix="fleetbus-demo-")
    config = BusConfig.from_env()
    registry = Registry(config).start()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "fleetbus.cli", "run", f"fleetbus.nodes.demo:{name}",
             *(["-p", f"rate_hz={args.rate}"] if name == "Talker" else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for name in NODES
    ]
    watcher = _Watcher("/_demo_watcher", config=config)
    console = Console()
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    try:
        with start(watcher), Live(console=console, auto_refresh=False) as live:
            began = time.monotonic()
            while not interrupted.wait(0.5):
                elapsed = time.monotonic() - began
                live.update(_view(config, watcher, elapsed), refresh=True)
                if elapsed >= args.duration:
                    break
        received = int(watcher.latest.get("received", "0"))
    finally:
        for child in children:
            child.send_signal(signal.SIGINT)
        codes = [child.wait(10) for child in children]
        registry.stop()
    failed = [f"{name} exited with {code}: {child.stderr.read()[-500:] if child.stderr else ''}"
              for name, code, child in zip(NODES, codes, children, strict=True) if code]
    for line in failed:
        console.print(f"[red]{line}[/]")
    leftovers = [f for f in os.listdir(config.run_dir) if f != "registry.lock"]
    if leftovers:
        console.print(f"[red]leftover socket files: {leftovers}[/]")
    ok = received > 0 and not failed and not leftovers
    console.print()
    console.print("[green]demo ok[/]: all nodes stopped cleanly" if ok else "[red]demo failed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
