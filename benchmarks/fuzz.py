"""Fuzz every parser of outside input at scale (issue 11): the targets of tests/test_fuzz.py,
each with its `scale` of inputs (100 000 for frames, headers, payloads and registry
messages), in batches of fresh hypothesis runs. Prints a table: inputs tried, rejected with
the parser's error, accepted, crashes (any other exception, with the first input that
raised it), inputs that took more CPU time than the tests' deadline, the slowest, and
the wall time.

    python -m benchmarks.fuzz [--examples N] [--targets frames,header] [--seed S]
    python -m benchmarks.fuzz --atheris RUNS [--targets frames]

`--atheris` drives the same properties from atheris (coverage-guided, libFuzzer) instead,
in a child process: hypothesis turns atheris' bytes into structured inputs
(`fuzz_one_input`), and fleetbus' Python code is instrumented for coverage. Exit status 1
if anything crashed or hung.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import reprlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

BATCH = 10_000
"""Inputs per hypothesis run: each batch is a fresh run with its own seed, so hypothesis'
record of the inputs it tried stays small and a batch can be repeated alone."""
_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlist, _SHOW.maxlevel = 120, 120, 6, 3


class _GcClock:
    """CPU seconds spent collecting garbage so far. A full collection of the heap that
    hypothesis builds over thousands of inputs takes seconds, and is no parser's time
    (hypothesis leaves it out of its deadline too)."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self._start_s = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start_s = time.process_time()
        else:
            self.total_s += time.process_time() - self._start_s


_GC = _GcClock()


def _cpu_s(run: Callable[[], Any]) -> float:
    """CPU seconds `run()` took, garbage collection left out."""
    start, gc_start = time.process_time(), _GC.total_s
    try:
        run()
    finally:
        spent = time.process_time() - start - (_GC.total_s - gc_start)
    return spent


@dataclasses.dataclass
class Tally:
    """What one target's inputs came to."""

    target: str
    tried: int = 0
    rejected: int = 0
    accepted: int = 0
    crashes: int = 0
    hangs: int = 0  # inputs that took more CPU time than the tests' deadline
    slowest_s: float = 0.0  # CPU time (GC left out): the machine may be busy otherwise
    wall_s: float = 0.0
    first_crash: str = ""
    first_hang: str = ""
    hang_limit_s: float = 2.0

    def observe(self, value: Any, check: Callable[[], str]) -> None:
        """Run one check: count its outcome; a crash is counted and kept, not raised, so
        that the run goes on and counts them all. A slow input is timed once more: a hang
        is slow twice, not a moment of a busy machine."""
        outcome = "crash"

        def once() -> None:
            nonlocal outcome
            try:
                outcome = check()
            except Exception as exc:
                self.crashes += 1
                if not self.first_crash:
                    self.first_crash = (f"{type(exc).__name__}: {_SHOW.repr(str(exc))} "
                                        f"on {_SHOW.repr(value)}")

        elapsed = _cpu_s(once)
        if elapsed > self.hang_limit_s:
            crashes = self.crashes
            elapsed = min(elapsed, _cpu_s(once))
            self.crashes = crashes  # the same input, counted once
        self.tried += 1
        self.rejected += outcome == "rejected"
        self.accepted += outcome == "accepted"
        self.slowest_s = max(self.slowest_s, elapsed)
        if elapsed > self.hang_limit_s:
            self.hangs += 1
            if not self.first_hang:
                self.first_hang = f"{elapsed:.1f} s of CPU on {_SHOW.repr(value)}"


def fuzz(name: str, examples: int, seed: int) -> Tally:
    """`examples` inputs of one target, in batches."""
    from tests.test_fuzz import TARGETS, run

    target = TARGETS[name]
    tally = Tally(name, hang_limit_s=target.deadline_ms / 1000)
    start = time.perf_counter()
    for batch, first in enumerate(range(0, examples, BATCH)):
        run(target, min(BATCH, examples - first), seed=seed + batch, observe=tally.observe)
    tally.wall_s = time.perf_counter() - start
    return tally


def atheris_child(name: str, runs: int) -> None:
    """In a child process (libFuzzer ends it with exit()): print a TALLY line every 1000
    inputs and at the last one, for the parent to read."""
    import atheris

    with atheris.instrument_imports(include=["fleetbus"]):
        from hypothesis import HealthCheck, given, settings

        from tests.test_fuzz import TARGETS

    target = TARGETS[name]
    tally = Tally(f"{name} (atheris)", hang_limit_s=target.deadline_ms / 1000)
    start = time.perf_counter()
    calls = 0

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.inputs)
    def check(value: Any) -> None:
        tally.observe(value, lambda: target.check(value))

    def one_input(data: bytes) -> None:
        nonlocal calls
        calls += 1
        check.hypothesis.fuzz_one_input(data)  # bytes -> a structured input -> check
        if calls % 1000 == 0 or calls >= runs:
            tally.wall_s = time.perf_counter() - start
            print("TALLY " + json.dumps(dataclasses.asdict(tally)), flush=True)

    artifacts = tempfile.mkdtemp(prefix="fbfuzz-atheris-")
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-len_control=0",
                   f"-artifact_prefix={artifacts}/"], one_input)
    atheris.Fuzz()


def atheris_run(name: str, runs: int) -> Tally:
    """Run `atheris_child` and read its last tally (a crash of libFuzzer itself, as
    opposed to a check's, comes back as one crash with its output)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "benchmarks.fuzz", "--atheris-child", name,
                           "--atheris", str(runs)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("TALLY ")]
    if not lines:
        tally = Tally(f"{name} (atheris)", crashes=1, first_crash=done.stderr[-500:])
    else:
        tally = Tally(**json.loads(lines[-1].removeprefix("TALLY ")))
    tally.wall_s = time.perf_counter() - start
    return tally


def report(tallies: list[Tally], command: str) -> Table:
    table = Table(title=f"fuzzing: {command}")
    for column in ("target", "inputs tried", "rejected (error)", "accepted", "crashes",
                   "hangs", "slowest (CPU ms)", "wall (s)"):
        table.add_column(column, justify="left" if column == "target" else "right")
    table.add_column("first crash (or hang)", overflow="fold", max_width=60)
    for t in tallies:
        table.add_row(t.target, f"{t.tried:,}", f"{t.rejected:,}", f"{t.accepted:,}",
                      str(t.crashes), str(t.hangs), f"{t.slowest_s * 1000:.0f}",
                      f"{t.wall_s:.0f}", t.first_crash or t.first_hang or "-")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, help="inputs per target (default: each "
                        "target's scale, 100 000 for the frame decoders)")
    parser.add_argument("--targets", help="comma-separated (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first batch")
    parser.add_argument("--atheris", type=int, metavar="RUNS",
                        help="run the targets under atheris for RUNS inputs each")
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.atheris_child:
        atheris_child(args.atheris_child, args.atheris)
        return 0
    from tests.test_fuzz import TARGETS

    names = args.targets.split(",") if args.targets else list(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets {unknown} (known: {', '.join(TARGETS)})")
    if args.atheris is not None:
        try:
            import atheris  # noqa: F401
        except ImportError as exc:
            parser.error(f"--atheris needs atheris (pip install atheris): {exc}")
    # Each rejection is logged where a node would log it; the table counts them instead.
    logging.disable(logging.WARNING)
    console = Console()
    if not console.is_terminal:  # a log file: room for the whole table
        console = Console(width=170)
    command = "python -m benchmarks.fuzz " + " ".join(sys.argv[1:] if argv is None else argv)
    tallies = []
    for name in names:
        if args.atheris is not None:
            tally = atheris_run(name, args.atheris)
        else:
            tally = fuzz(name, args.examples or TARGETS[name].scale, args.seed)
        console.print(f"{tally.target}: {tally.tried:,} inputs, {tally.crashes} crashes, "
                      f"{tally.wall_s:.0f} s")
        tallies.append(tally)
    console.print(report(tallies, command.strip()))
    return 1 if any(t.crashes or t.hangs for t in tallies) else 0


if __name__ == "__main__":
    sys.exit(main())
