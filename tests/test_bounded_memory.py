"""Memory that must stay flat however long a vehicle runs (issue 11: a soak run saw the drone
and ship processes grow by steps of 3.7 MiB).

The cause was not a container of ours but CPython's interned-string table: CasADi's
`Function.stats()` interns every statistic's name (46 for fatrop), and with the dict dropped
after each solve those names died again, each leaving a dead slot in the table. Every
~3,600 solves (six minutes of sim time at 10 Hz) the table ran out of free slots and was
re-allocated (3.7 MiB with the stack imported). The solver's server (in the solver's own
process) now keeps its last statistics, so the next solve finds the same names interned and
adds nothing: checked here, with the server in this process, by whether the names outlive a
solve, without timing or thousands of solves.

The fusion engines, suspected first, are held to a bound too: what they keep is a window of
stamps, not a history.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from fleetbus import estimation
from fleetbus.control.mpc import MpcSettings, PathTrackingMpc, vehicle_model
from fleetbus.control.solver_process import SolverServer, pack_request
from fleetbus.estimation import FILTERS, Fusion
from fleetbus.models import Bicycle

N, DT = 20, 0.1
LANE = [(np.array([[0.0, 1.0], [0.0, -1.0]]), np.array([2.0, 2.0]))] * N  # |y| <= 2 m
ESTIMATION = tracemalloc.Filter(True, f"{Path(estimation.__file__).parent}/*")  # its lines


def _names(stats: dict) -> list[str]:
    """Every key of a statistics dict, nested ones included (fatrop's own, IPOPT's
    iterations)."""
    out = []
    for key, value in stats.items():
        out.append(key)
        if isinstance(value, dict):
            out += _names(value)
    return out


@pytest.mark.parametrize("solver", ["fatrop", "ipopt"])
def test_mpc_solves_add_nothing_to_the_interned_string_table(solver):
    mpc = PathTrackingMpc(vehicle_model("car", Bicycle()),
                          MpcSettings(solver=solver, jit=False, budget_s=10.0))
    server = SolverServer(mpc.build_function())
    ts = np.arange(N + 1) * DT
    x, ref = np.array([0.0, 0.0, 0.0, 1.0]), np.vstack([ts, 0.0 * ts, 1.0 + 0.0 * ts])
    guess = np.zeros(server.shapes[-1])
    request = pack_request([*mpc.problem(x, np.zeros(2), ref, LANE), guess], server.shapes)

    def solve() -> None:
        server.answer(request)
        assert server.stats["success"]

    solve()
    # Equal strings that are not the interned objects: sys.intern(copy) hands back the
    # interned one while it is alive, else the copy itself (interned from then on).
    # (one-character strings are immortal singletons: left out)
    copies = ["".join(list(name)) for name in _names(server.stats) if len(name) > 1]
    assert len(copies) > 10
    for _ in range(3):
        solve()
    died = [name for name in copies if sys.intern(name) is name]
    assert not died, f"stat names freed after a solve, re-interned by the next: {died}"


def _readings(kind: str, k: int, rng: np.random.Generator) -> list[tuple]:
    """The sensors of a vehicle at rest, tick k of 100 Hz: (sensor, stamp, z, R)."""
    t = k * 0.01
    out = []
    if kind == "quadrotor":
        imu_r = np.diag([0.05**2] * 3 + [0.005**2] * 3) * (1.0 + 0.01 * (k % 7))  # R varies
        out.append(("imu", t, np.r_[rng.normal(0, 0.05, 3) + np.array([0.0, 0.0, 9.81]),
                                    rng.normal(0, 0.005, 3)], imu_r))
    if k % 10 == 0:
        out.append(("heading", t, [rng.normal(0, 0.01)], [[1e-4]]))
        out.append(("baro", t, [20 + rng.normal(0, 0.1)], [[0.01]]) if kind == "quadrotor"
                   else ("speed_log", t, rng.normal(0, 0.05, 2), np.eye(2) * 0.0025))
    if k % 20 == 0:  # late, inside the history window: inserted and the filter re-run
        out.append(("gnss", t - 0.05, [rng.normal(0, 0.5), rng.normal(0, 0.5),
                                       20 + rng.normal(0, 0.5)], np.diag([0.25, 0.25, 0.5])))
    return sorted(out, key=lambda r: r[1])


@pytest.mark.parametrize("kind", ["quadrotor", "vessel"])
def test_fusion_keeps_a_window_not_a_history(kind):
    fusion, rng = Fusion(FILTERS[kind]()), np.random.default_rng(1)

    def run(ticks: range) -> None:
        for k in ticks:
            for reading in _readings(kind, k, rng):
                fusion.add(*reading)
            if k % 2 == 0:
                fusion.estimate_at(k * 0.01)  # the node's 50 Hz output

    run(range(0, 500))  # 5 s: started, every sensor seen
    gc.collect()
    tracemalloc.start()
    try:
        run(range(500, 1000))
        gc.collect()
        before = tracemalloc.take_snapshot().filter_traces([ESTIMATION])
        run(range(1000, 2000))  # 10 s more
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces([ESTIMATION])
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert fusion.ready
    assert grown < 16 * 1024, f"the {kind} fusion engine kept {grown} B more in 10 s"
