"""`make bench`: fleetbus against its floor, side by side in one run, as ratios.

    python -m benchmarks.report [--quick] [--check BASELINE.json] [--out DIR]

Every bus measurement runs the same peer processes twice — once as fleetbus nodes, once
as raw pyzmq with the same payload, sockets and pacing (benchmarks/peers.py) — and
reports ours/floor. Ratios, not absolute times, are what `--check` compares with the
committed baseline, so the check holds across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import msgspec
import numpy as np
import zmq
from rich.console import Console
from rich.table import Table

from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry import Registry
from fleetbus.messages import Codec, Odometry

RESULTS = Path(__file__).parent / "results"
REGRESSION = 1.2  # --check fails when a ratio is more than 20 % worse than the baseline


@dataclass
class Result:
    name: str
    unit: str
    ours: float
    floor: float
    floor_name: str
    target: float | None  # bound on ours/floor
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.ours / self.floor

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target


# -- running peers ---------------------------------------------------------------------------


@contextmanager
def bus(impl: str) -> Iterator[Path]:
    """A fresh socket directory (short path: ipc names are limited to ~107 bytes), with a
    registry when fleetbus runs in it."""
    run_dir = Path(tempfile.mkdtemp(prefix="fbb-", dir="/tmp"))
    registry = None
    if impl == "fleetbus":
        registry = Registry(BusConfig.from_env(run_dir=run_dir,
                                               registry=f"ipc://{run_dir}/registry")).start()
    try:
        yield run_dir
    finally:
        if registry is not None:
            registry.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def spawn(role: str, impl: str, run_dir: Path, **options: object) -> subprocess.Popen:
    args = [sys.executable, "-m", "benchmarks.peers", role, "--impl", impl,
            "--run-dir", str(run_dir)]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    env = dict(os.environ, FLEETBUS_RUN_DIR=str(run_dir), FLEETBUS_AUTOREGISTRY="0")
    return subprocess.Popen(args, env=env, cwd=Path(__file__).parent.parent)


def wait_all(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    for proc in procs:
        code = proc.wait(timeout)
        if code:
            raise RuntimeError(f"benchmark peer {proc.args} exited with {code}")


def _wait_files(paths: list[Path], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark sinks not ready: {paths}")
        time.sleep(0.01)


def stream(impl: str, kind: str, size: int, count: int, rate: float,
           subscribers: int = 1) -> list[np.ndarray]:
    """One source → `subscribers` sink processes; each sink's [stamp, receive] rows."""
    with bus(impl) as run_dir:
        outs = [run_dir / f"sink{i}.npy" for i in range(subscribers)]
        sinks = [spawn("sink", impl, run_dir, kind=kind, count=count, index=i, out=out)
                 for i, out in enumerate(outs)]
        _wait_files([Path(f"{out}.ready") for out in outs])
        source = spawn("source", impl, run_dir, kind=kind, size=size, count=count, rate=rate,
                       subscribers=subscribers)
        wait_all([source, *sinks])
        return [np.load(out) for out in outs]


def steady(values: np.ndarray) -> np.ndarray:
    """Drop the first 10 %: connection set-up and cold caches are not the steady state."""
    return values[len(values) // 10:]


def one_way_us(impl: str, kind: str, size: int, count: int, rate: float) -> np.ndarray:
    (rows,) = stream(impl, kind, size, count, rate)
    return steady(rows[:, 1] - rows[:, 0]) / 1e3


def last_subscriber_us(impl: str, count: int, rate: float, fanout: int) -> np.ndarray:
    """Per message, the latency of the slowest of `fanout` subscribers."""
    sinks = stream(impl, "blob", 1000, count, rate, fanout)
    latest: dict[int, list[int]] = {}
    for rows in sinks:
        for stamp, received in rows:
            latest.setdefault(int(stamp), []).append(int(received))
    complete = sorted((s, max(r)) for s, r in latest.items() if len(r) == fanout)
    return steady(np.array([r - s for s, r in complete])) / 1e3


def throughput_hz(impl: str, count: int) -> float:
    (rows,) = stream(impl, "odometry", 0, count, 0.0)
    received = steady(np.sort(rows[:, 1]))
    return (len(received) - 1) / ((received[-1] - received[0]) * 1e-9)


def rtt_us(impl: str, count: int) -> np.ndarray:
    with bus(impl) as run_dir:
        out = run_dir / "rtt.npy"
        echo = spawn("echo", impl, run_dir, kind="blob")
        pinger = spawn("pinger", impl, run_dir, kind="blob", size=1000, count=count, out=out)
        wait_all([pinger])
        echo.send_signal(2)  # SIGINT: the fleetbus echo runs until told
        wait_all([echo])
        return steady(np.load(out)) / 1e3


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Spec:
    """How to measure one figure with either implementation ("fleetbus" or "raw")."""

    name: str
    unit: str
    floor_name: str
    target: float | None
    measure: Callable[[str], float]
    higher_is_better: bool = False


def run(spec: Spec, rounds: int = 2) -> Result:
    """Ours and floor, each the median of `rounds` runs, interleaved so that neither
    always runs on a warmer or busier machine."""
    ours, floor = [], []
    for _ in range(rounds):
        floor.append(spec.measure("raw"))
        ours.append(spec.measure("fleetbus"))
    return Result(spec.name, spec.unit, float(np.median(ours)), float(np.median(floor)),
                  spec.floor_name, spec.target, spec.higher_is_better)


def codec_results() -> list[Result]:
    msg = Odometry(child_frame_id="base_link", pose_covariance=[0.1] * 36,
                   twist_covariance=[0.2] * 36)
    codec = Codec(Odometry)
    as_dict = msgspec.to_builtins(msg)
    enc, dec = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(Odometry)
    candidates = {
        "ours": lambda: codec.decode(*codec.encode(msg)),
        "msgpack + dict": lambda: msgpack.unpackb(msgpack.packb(as_dict)),
        "bare msgspec Struct": lambda: dec.decode(enc.encode(msg)),
    }
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(7):  # interleaved; the minimum is the least disturbed run
        for key, fn in candidates.items():
            best[key] = min(best[key], timeit.timeit(fn, number=2000) / 2000 * 1e6)
    return [
        Result("codec Odometry encode+decode", "µs", best["ours"], best[floor], floor, target)
        for floor, target in (("msgpack + dict", None), ("bare msgspec Struct", 1.3))
    ]


def bus_specs(quick: bool) -> list[Spec]:
    n = 1500 if quick else 3000

    def percentile(pct: int) -> Callable[[str], float]:
        return lambda impl: float(np.percentile(one_way_us(impl, "blob", 1000, n, 1000.0), pct))

    return [
        Spec("one-way 1 KB @ 1 kHz, 2 processes, p50", "µs", "raw pyzmq", 1.3, percentile(50)),
        Spec("one-way 1 KB @ 1 kHz, 2 processes, p99", "µs", "raw pyzmq", None, percentile(99)),
        Spec("ping-pong RTT 1 KB, p50", "µs", "raw pyzmq", 1.3,
             lambda impl: float(np.median(rtt_us(impl, n)))),
        Spec("throughput Odometry 1 → 1", "msg/s", "raw pyzmq + msgspec", 0.7,
             lambda impl: throughput_hz(impl, 50000 if quick else 100000),
             higher_is_better=True),
        Spec("one-way 1 MiB numpy array @ 100 Hz, p50", "µs", "raw pyzmq zero-copy", 1.2,
             lambda impl: float(np.median(
                 one_way_us(impl, "array", 2**20, 200 if quick else 400, 100.0)))),
        Spec("fan-out 1 → 8 processes, last subscriber p50", "µs", "raw pyzmq", 1.3,
             lambda impl: float(np.median(
                 last_subscriber_us(impl, 800 if quick else 2000, 1000.0, 8)))),
    ]


# -- reporting ----------------------------------------------------------------------------------


def show(results: list[Result], console: Console) -> None:
    table = Table(title="fleetbus vs floor (same run, same machine)", title_justify="left")
    for column in ("benchmark", "ours", "floor", "floor is", "ratio", "target", "ok"):
        table.add_column(column)
    for r in results:
        target = "-" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + str(r.target)
        ok = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[r.passed]
        table.add_row(r.name, f"{r.ours:,.1f} {r.unit}", f"{r.floor:,.1f} {r.unit}",
                      r.floor_name, f"{r.ratio:.2f}", target, ok)
    console.print(table)


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "pyzmq": zmq.__version__,
            "libzmq": zmq.zmq_version(), "msgspec": msgspec.__version__}


def regressed(result: Result, baseline: dict[tuple[str, str], dict]) -> bool:
    """More than REGRESSION worse than the baseline ratio (only figures with a target:
    untargeted ones such as p99 are reported, too noisy to gate on)."""
    base = baseline.get((result.name, result.floor_name))
    if base is None or result.target is None:
        return False
    if result.higher_is_better:
        return base["ratio"] / result.ratio > REGRESSION
    return result.ratio / base["ratio"] > REGRESSION


def check(results: list[Result], specs: dict[str, Spec], baseline_file: Path,
          console: Console) -> bool:
    """True when no figure regressed. A figure that looks regressed is measured once
    more and the better of the two kept: one noisy run on a shared VM is not a
    regression, two in a row are."""
    baseline = {(r["name"], r["floor_name"]): r
                for r in json.loads(baseline_file.read_text())["results"]}
    ok = True
    for i, result in enumerate(results):
        if not regressed(result, baseline):
            continue
        spec = specs.get(result.name)
        if spec is not None:
            again = run(spec)
            better = again.ratio > result.ratio if result.higher_is_better else (
                again.ratio < result.ratio)
            results[i] = result = again if better else result
        if regressed(result, baseline):
            ok = False
            base = baseline[(result.name, result.floor_name)]["ratio"]
            console.print(f"[red]regression[/] {result.name} vs {result.floor_name}: "
                          f"ratio {result.ratio:.2f}, baseline {base:.2f}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages")
    parser.add_argument("--check", type=Path, help="baseline JSON to compare ratios with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 140))  # a readable table in CI logs too
    specs = {spec.name: spec for spec in bus_specs(args.quick)}
    results = codec_results() + [run(spec) for spec in specs.values()]
    ok = args.check is None or check(results, specs, args.check, console)
    show(results, console)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {"when": stamp, "quick": args.quick, "machine": machine(),
                "results": [asdict(r) | {"ratio": r.ratio, "passed": r.passed}
                            for r in results]}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in (f"{stamp}.json", "latest.json"):
        (args.out / name).write_text(json.dumps(document, indent=2))
    console.print(f"results written to {args.out / 'latest.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
