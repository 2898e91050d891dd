"""The solver's own process (issue 11): a call not answered in time is ended with its
process, a process that dies is replaced, and none outlives the process that started it.

The slow calls are real CPU work in CasADi's C code: a fold of folds evaluates sin 10^9
times (minutes), behind a short-circuiting if_else so that the same function also answers
at once.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import casadi as ca
import numpy as np
import pytest

from fleetbus.control.compiled import (
    build_once,
    compiler_available,
    jit_name,
    jit_options,
    lock_file,
)
from fleetbus.control.solver_process import SolverProcess, SolverTimeout
from tests.helpers import wait_until


def slow_or_quick() -> ca.Function:
    """f(x, slow, y) = (x + 1 + sum(y) if not slow, else x after 10^9 steps of sin(x) + 1)."""
    s = ca.SX.sym("s")
    minutes = ca.Function("step", [s], [ca.sin(s) + 1]).fold(1000).fold(1000).fold(1000)
    x, slow, y = ca.MX.sym("x"), ca.MX.sym("slow"), ca.MX.sym("y", 1, 3)
    out = ca.if_else(slow > 0, minutes(x), x + 1 + ca.sum2(y), True)
    return ca.Function("slow_or_quick", [x, slow, y], [out])


def gone(pid: int) -> bool:
    """The process has ended (a zombie whose parent has not reaped it counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def process():
    p = SolverProcess(slow_or_quick(), name="test solver")
    yield p
    p.close()


def test_a_call_gives_the_functions_value(process):
    answer = process.call([2.0, 0.0, np.array([1.0, 2.0, 3.0])], timeout_s=30.0)
    assert answer.values.tolist() == [[9.0]]
    with pytest.raises(ValueError):  # an input of the wrong size is refused here
        process.call([2.0, 0.0, np.zeros(4)], timeout_s=30.0)


def test_a_call_not_answered_in_time_ends_its_process_and_the_next_gets_a_fresh_one(process):
    first = process.pid
    with pytest.raises(SolverTimeout, match=f"test solver: no answer in 0.5 s: process "
                                            f"{first} killed"):
        process.call([0.3, 1.0, np.zeros(3)], timeout_s=0.5)
    assert gone(first) and process.restarts == 1 and process.pid != first
    assert process.call([0.3, 0.0, np.zeros(3)], timeout_s=30.0).values.tolist() == [[1.3]]


def test_a_solver_process_that_dies_is_an_error_and_is_replaced(process):
    process.await_ready()
    first = process.pid
    os.kill(first, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=f"solver process {first} died \\(SIGKILL\\)"):
        process.call([0.3, 0.0, np.zeros(3)], timeout_s=30.0)
    assert process.restarts == 1
    assert process.call([0.5, 0.0, np.ones(3)], timeout_s=30.0).values.tolist() == [[4.5]]


def test_a_solver_file_that_cannot_be_loaded_is_refused_with_the_reason(tmp_path):
    broken = tmp_path / "broken.casadi"
    broken.write_text("not a CasADi function\n")
    p = SolverProcess(broken, name="broken")
    try:
        with pytest.raises(RuntimeError, match="could not load the solver: error: "):
            p.call([0.3, 0.0, np.zeros(3)], timeout_s=30.0)
        pid = p.pid
        with pytest.raises(RuntimeError, match="could not load the solver"):  # said again,
            p.call([0.3, 0.0, np.zeros(3)], timeout_s=30.0)
        assert p.pid == pid and p.restarts == 0  # not restarted at every call
    finally:
        p.close()


def test_a_solver_process_ends_with_its_parent_even_in_the_middle_of_a_call():
    """kill -9 of a controller whose solve is spinning: the solver's process sees its parent
    gone and ends (it would never read the closed pipe)."""
    script = textwrap.dedent("""
        import sys
        from tests.test_solver_process import slow_or_quick
        from fleetbus.control.solver_process import SolverProcess
        p = SolverProcess(slow_or_quick())
        p.await_ready()
        print(p.pid, flush=True)
        p.call([0.3, 1.0, [0.0, 0.0, 0.0]], timeout_s=1e6)  # minutes of work
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).parent.parent)
    try:
        child = int(parent.stdout.readline())
        wait_until(lambda: not gone(child), what="the solver process to run")
        parent.kill()
        parent.wait()
        wait_until(lambda: gone(child), timeout=10.0, what=f"solver process {child} to end")
    finally:
        parent.kill()
        parent.stdout.close()


@pytest.mark.skipif(not compiler_available(), reason="no C compiler")
def test_processes_load_one_compiled_function_at_once(tmp_path, monkeypatch):
    """A compiled function's file names the /tmp path of its binary, which its builder
    deleted when its function was destroyed: four solver processes started together (a
    fleet's drones) each find it missing or written back by another, and all load it."""
    monkeypatch.setenv("FLEETBUS_CACHE_DIR", str(tmp_path))

    def build() -> ca.Function:
        x = ca.SX.sym("x")
        return ca.Function("twice", [x], [2 * x], jit_options(jit_name("load_race")))

    path = build_once("test", "load_race", build)
    processes = [SolverProcess(path, lock_file(path), name=f"p{i}") for i in range(4)]
    try:
        assert [p.call([3.0], timeout_s=60.0).values.tolist() for p in processes] == [
            [[6.0]]] * 4
    finally:
        for p in processes:
            p.close()


def test_a_solver_process_works_with_descriptors_past_1024():
    """A controller's process (or this test run) may hold over a thousand descriptors:
    the pipes' numbers are past what select() takes, and the calls still go through."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        p = SolverProcess(slow_or_quick(), name="many descriptors")
        try:
            assert p.call([1.0, 0.0, np.zeros(3)], timeout_s=30.0).values.tolist() == [[2.0]]
        finally:
            p.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
