"""The planning benchmark's peer: extremitypathfinder (PyPI), an exact visibility-graph
planner, on the same free-space polygon as fleetbus's planner. It pins numpy<2, so it
runs in its own venv (.venv-peers; benchmarks/test_planning.py creates it):

    .venv-peers/bin/python benchmarks/planning_peer.py WORLD.json [--rounds N]
    .venv-peers/bin/python benchmarks/planning_peer.py WORLD.json --serve

WORLD.json holds {"boundary": [[x, y], ...], "holes": [[[x, y], ...], ...], "start":
[x, y], "goal": [x, y]}, already as extremitypathfinder wants it: boundary counter-
clockwise, holes clockwise, no ring repeating its first vertex. Preparing is
`PolygonEnvironment.store()` (which builds the visibility graph), a query is
`find_shortest_path()`; both are timed here, so the figures hold no process start-up.

One-shot mode prepares once, queries N times and prints one JSON line. Serve mode first
prints a JSON line describing itself, then answers each request line ({"op": "prepare"},
{"op": "query"} or {"op": "all"}: prepare then query) with one JSON line; EOF ends it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib.metadata import version

from extremitypathfinder import PolygonEnvironment

# Numba compiles on first use: a tiny world is planned once before anything is timed.
WARM_UP = {"boundary": [[0, 0], [10, 0], [10, 10], [0, 10]],
           "holes": [[[4, 4], [4, 6], [6, 6], [6, 4]]], "start": [1, 5], "goal": [9, 5]}


def uses_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class Peer:
    def __init__(self, world: dict) -> None:
        self.world = world
        self.env: PolygonEnvironment | None = None

    def prepare(self) -> dict:
        t0 = time.perf_counter()
        env = PolygonEnvironment()
        env.store(self.world["boundary"], self.world["holes"], validate=False)
        self.env = env
        return {"prepare_s": time.perf_counter() - t0}

    def query(self) -> dict:
        if self.env is None:
            raise RuntimeError("query before prepare")
        t0 = time.perf_counter()
        path, length = self.env.find_shortest_path(self.world["start"], self.world["goal"])
        elapsed = time.perf_counter() - t0
        return {"query_s": elapsed, "length_m": length,
                "points": [[float(x), float(y)] for x, y in path]}

    def handle(self, op: str) -> dict:
        if op == "prepare":
            return self.prepare()
        if op == "query":
            return self.query()
        if op == "all":
            return self.prepare() | self.query()
        raise ValueError(f"unknown op {op!r} (prepare, query or all)")


def describe(world: dict) -> dict:
    return {"peer": "extremitypathfinder", "version": version("extremitypathfinder"),
            "numba": uses_numba(), "python": sys.version.split()[0],
            "vertices": len(world["boundary"]) + sum(len(h) for h in world["holes"])}


def serve(peer: Peer) -> None:
    print(json.dumps(describe(peer.world)), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = peer.handle(json.loads(line)["op"])
        except Exception as exc:  # the benchmark shows it and stops using the peer
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("world", help="the world as JSON (see the module docstring)")
    parser.add_argument("--rounds", type=int, default=5, help="queries to time")
    parser.add_argument("--serve", action="store_true", help="answer requests on stdin")
    args = parser.parse_args()
    with open(args.world) as f:
        world = json.load(f)
    Peer(WARM_UP).handle("all")
    peer = Peer(world)
    if args.serve:
        serve(peer)
        return
    report = describe(world) | peer.prepare()
    queries = [peer.query() for _ in range(args.rounds)]
    report |= queries[-1] | {"query_s": statistics.median(q["query_s"] for q in queries)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
