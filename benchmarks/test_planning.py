"""pytest-benchmark suite for geofenced planning (`python -m pytest benchmarks/test_planning.py
--benchmark-only`): a 1 000-vertex fence with 50 exclusion zones and a 5 m margin, planned
across. Ours against extremitypathfinder (PyPI) on the very same free-space polygon, side
by side in the same groups; then a table of prepare / query / total and the ratios, also
written to benchmarks/results/planning.json.

extremitypathfinder pins numpy<2, so it runs in its own venv (.venv-peers, created here
on first use) as benchmarks/planning_peer.py, which times its own work: the table holds
its internal times, the pytest-benchmark rows also the pipe round trip (well under a
millisecond). FLEETBUS_BENCH_PEER=0 leaves the peer out; it spends minutes preparing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
from rich.console import Console
from rich.table import Table
from shapely.geometry import Point
from shapely.geometry.polygon import orient

from fleetbus.planners import Geofence, VisibilityPlanner
from tests.worlds import World, disc_world

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results" / "planning.json"
PEER_VENV = ROOT / ".venv-peers"
PEER_SCRIPT = Path(__file__).parent / "planning_peer.py"
# The peer's documentation recommends its numba extra; without it, it prepares about half
# as fast (209 s instead of 110 s for this world here).
PEER_INSTALLS = (["extremitypathfinder[numba]", "shapely"], ["extremitypathfinder", "shapely"])
PEER_TIMEOUT_S = 1800  # its preparation of this world takes minutes
QUERY_ROUNDS = 5

WORLD = disc_world(seed=0)
SAMPLES = 10_000

# Filled by the benchmarks below, reported when the module is done: {who: {phase: s}}.
FIGURES: dict[str, dict[str, float]] = {"ours": {}, "peer": {}}
FACTS: dict[str, object] = {}


def prepare(world: World) -> VisibilityPlanner:
    """Everything before a search, from the zones: fence, free space, planner."""
    return VisibilityPlanner(Geofence(world.zones).free_space(world.margin_m))


def plan_from_scratch(world: World):
    return prepare(world).plan(world.start, world.goal)


def record(benchmark, who: str, phase: str) -> None:
    stats = getattr(benchmark, "stats", None)  # None with --benchmark-disable
    if stats is not None:
        FIGURES[who][phase] = stats.stats.median


@pytest.fixture(scope="module")
def planner() -> VisibilityPlanner:
    planner = prepare(WORLD)
    rings = shapely.get_rings(shapely.get_parts(planner.free))
    FACTS["free_space_vertices"] = int(shapely.get_num_coordinates(rings).sum() - len(rings))
    FACTS["reflex_corners"] = len(planner.nodes)
    return planner


@pytest.fixture(scope="module")
def ours(planner):
    result = planner.plan(WORLD.start, WORLD.goal)
    assert result.ok, result.message
    FACTS["ours_length_m"] = result.length_m
    FACTS["ours_waypoints"] = len(result.points)
    return result


# -- ours -----------------------------------------------------------------------------------


@pytest.mark.benchmark(group="planning: preparation (fence + free space + planner)")
def test_ours_preparation(benchmark, planner) -> None:
    fresh = benchmark(prepare, WORLD)
    record(benchmark, "ours", "prepare")
    assert len(fresh.nodes) == len(planner.nodes)


@pytest.mark.benchmark(group="planning: all preparation + plan, from the zones")
def test_ours_prepare_and_plan(benchmark, ours) -> None:
    result = benchmark(plan_from_scratch, WORLD)
    record(benchmark, "ours", "total")
    assert result.ok and result.length_m == ours.length_m


@pytest.mark.benchmark(group="planning: search on a prepared planner")
def test_ours_search(benchmark, planner, ours) -> None:
    result = benchmark(planner.plan, WORLD.start, WORLD.goal)
    record(benchmark, "ours", "query")
    assert result.length_m == ours.length_m


# -- the peer -------------------------------------------------------------------------------


class PeerProcess:
    """planning_peer.py --serve in the peers' venv: one JSON request and reply a line."""

    def __init__(self, python: Path, world_json: Path) -> None:
        self.proc = subprocess.Popen([str(python), str(PEER_SCRIPT), str(world_json), "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._reply()
        self.prepared = False

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer exited with {self.proc.wait()}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the peer failed: {reply['error']}")
        return reply

    def __call__(self, op: str) -> dict:
        self.proc.stdin.write(json.dumps({"op": op}) + "\n")
        self.proc.stdin.flush()
        reply = self._reply()
        self.prepared |= op in ("prepare", "all")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()  # EOF: the peer exits
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:  # still busy with a request: our own child
            self.proc.kill()
            self.proc.wait()


def peer_python() -> Path:
    """The peers' venv's python, with extremitypathfinder installed (made on first use);
    skips the peer, saying why, when that cannot be done."""
    python = PEER_VENV / "bin" / "python"
    check = [str(python), "-c", "import extremitypathfinder"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    errors = []
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True,
                           capture_output=True, text=True, timeout=300)
        for packages in PEER_INSTALLS:
            pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages],
                                 capture_output=True, text=True, timeout=900)
            if pip.returncode == 0:
                return python
            errors.append(f"pip install {' '.join(packages)}: {pip.stderr.strip()[-500:]}")
    except (OSError, subprocess.SubprocessError) as exc:
        detail = (getattr(exc, "stderr", None) or "").strip()[-500:]
        errors.append(f"{type(exc).__name__}: {exc} {detail}".strip())
    pytest.skip("peer extremitypathfinder unavailable (it needs its own venv, "
                f"{PEER_VENV}): " + "; ".join(errors))


def export_free_space(world: World, path: Path) -> dict:
    """Our free space, exactly, as the peer wants it: the part holding the start, boundary
    counter-clockwise, holes clockwise, rings without the repeated first vertex."""
    free = Geofence(world.zones).free_space(world.margin_m)
    parts = [p for p in getattr(free, "geoms", [free]) if p.covers(Point(world.start))]
    part = orient(parts[0], 1.0)

    def ring(r) -> list[list[float]]:
        return np.asarray(r.coords)[:-1].tolist()

    data = {"boundary": ring(part.exterior), "holes": [ring(r) for r in part.interiors],
            "start": world.start.tolist(), "goal": world.goal.tolist()}
    path.write_text(json.dumps(data))
    return data


@pytest.fixture(scope="module")
def peer(tmp_path_factory) -> Iterator[PeerProcess]:
    if os.environ.get("FLEETBUS_BENCH_PEER") == "0":
        pytest.skip("FLEETBUS_BENCH_PEER=0: the peer is left out")
    python = peer_python()
    world_json = tmp_path_factory.mktemp("planning") / "world.json"
    export_free_space(WORLD, world_json)
    proc = PeerProcess(python, world_json)
    FACTS["peer"] = proc.info
    yield proc
    proc.close()


def check_same_length(reply: dict, ours) -> None:
    assert reply["length_m"] is not None, "the peer found no path"
    difference = reply["length_m"] - ours.length_m
    FACTS["peer_length_m"] = reply["length_m"]
    FACTS["length_difference_m"] = difference
    assert abs(difference) <= 1e-6 * ours.length_m, (
        f"path lengths differ: ours {ours.length_m} m, peer {reply['length_m']} m")


@pytest.mark.timeout(PEER_TIMEOUT_S)
@pytest.mark.benchmark(group="planning: all preparation + plan, from the zones")
def test_peer_prepare_and_plan(benchmark, peer, ours) -> None:
    replies: list[dict] = []
    benchmark.pedantic(lambda: replies.append(peer("all")), rounds=1, iterations=1)
    FIGURES["peer"]["prepare"] = replies[0]["prepare_s"]
    FIGURES["peer"].setdefault("query", replies[0]["query_s"])
    check_same_length(replies[0], ours)


@pytest.mark.timeout(PEER_TIMEOUT_S)
@pytest.mark.benchmark(group="planning: search on a prepared planner")
def test_peer_search(benchmark, peer, ours) -> None:
    if not peer.prepared:
        peer("prepare")
    replies: list[dict] = []
    benchmark.pedantic(lambda: replies.append(peer("query")), rounds=QUERY_ROUNDS,
                       iterations=1)
    FIGURES["peer"]["query"] = float(np.median([r["query_s"] for r in replies]))
    check_same_length(replies[-1], ours)


# -- geofence queries (ours only) -----------------------------------------------------------


def banded(world: World) -> Geofence:
    """The world's fence with altitude bands, so that 3-D queries cross three slabs: the
    area up to 120 m, every other obstacle up to 60 m."""
    area, *obstacles = world.zones
    return Geofence([replace(area, ceiling_m=120.0)] + [
        replace(z, ceiling_m=60.0) if k % 2 else z for k, z in enumerate(obstacles)])


@pytest.fixture(scope="module")
def queries() -> tuple[Geofence, np.ndarray]:
    fence = banded(WORLD)
    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(-1100, 1100, (SAMPLES, 2)), rng.uniform(0, 150, SAMPLES)])
    fence.signed_distance(pts)  # builds the slabs' regions and trees once
    fence.signed_distance(pts[:, :2])
    return fence, pts


@pytest.mark.benchmark(group=f"geofence: {SAMPLES} points, vectorised")
@pytest.mark.parametrize("dims", [2, 3])
def test_contains(benchmark, queries, dims: int) -> None:
    fence, pts = queries
    inside = benchmark(fence.contains, pts[:, :dims])
    record(benchmark, "ours", f"contains_{dims}d")
    assert 0.3 < inside.mean() < 0.9  # both kinds of points are there


@pytest.mark.benchmark(group=f"geofence: {SAMPLES} points, vectorised")
@pytest.mark.parametrize("dims", [2, 3])
def test_signed_distance(benchmark, queries, dims: int) -> None:
    fence, pts = queries
    sd = benchmark(fence.signed_distance, pts[:, :dims])
    record(benchmark, "ours", f"signed_distance_{dims}d")
    assert np.array_equal(np.signbit(sd), ~fence.contains(pts[:, :dims]))


# -- the report -----------------------------------------------------------------------------


def table(figures: dict[str, dict[str, float]], facts: dict) -> Table:
    peer = facts.get("peer") or {}
    name = (f"extremitypathfinder {peer.get('version', '')}"
            f"{' + numba' if peer.get('numba') else ''}").strip()
    out = Table(title=f"Planning across a {len(WORLD.zones[0].shape.exterior.coords) - 1}-"
                      f"vertex fence with {len(WORLD.zones) - 1} zones, margin "
                      f"{WORLD.margin_m:g} m ({facts.get('free_space_vertices', '?')} "
                      "free-space vertices)")
    out.add_column("phase")
    out.add_column("ours", justify="right")
    out.add_column(name, justify="right")
    out.add_column("peer / ours", justify="right")
    labels = {"prepare": "prepare", "query": "query (search)", "total": "total"}
    for phase, label in labels.items():
        a, b = figures["ours"].get(phase), figures["peer"].get(phase)
        out.add_row(label, _ms(a), _ms(b), _ratio(b, a))
    if "length_difference_m" in facts:
        out.caption = (f"path length: ours {facts['ours_length_m']:.6f} m, peer "
                       f"{facts['peer_length_m']:.6f} m, difference "
                       f"{facts['length_difference_m']:.2e} m")
    return out


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.2f} ms"


def _ratio(a: float | None, b: float | None) -> str:
    if not (a and b):
        return "-"
    return f"{a / b:,.0f}x" if a / b >= 100 else f"{a / b:.2f}x"


@pytest.fixture(scope="module", autouse=True)
def report(request) -> Iterator[None]:
    """After the module: the table on the terminal, the figures in planning.json."""
    yield
    if not FIGURES["ours"]:
        return
    peer = FIGURES["peer"]
    if "prepare" in peer and "query" in peer:
        peer["total"] = peer["prepare"] + peer["query"]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(), "python": platform.python_version(),
        "world": {"fence_vertices": len(WORLD.zones[0].shape.exterior.coords) - 1,
                  "zones": len(WORLD.zones) - 1, "margin_m": WORLD.margin_m},
        "seconds": FIGURES, "facts": FACTS,
        "peer_over_ours": {phase: peer[phase] / FIGURES["ours"][phase]
                           for phase in peer if FIGURES["ours"].get(phase)},
    }, indent=2) + "\n")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else nullcontext():
        Console().print(table(FIGURES, FACTS))
        print(f"written to {RESULTS}")
