"""Fixtures: every test gets its own bus (a fresh socket directory and registry), and
everything it started is stopped afterwards — with a check that nothing left socket files
behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fleetbus
from fleetbus.bus.config import BusConfig
from fleetbus.bus.registry import Registry
from fleetbus.bus.registry_client import fetch_graph
from tests.helpers import FnNode, graph_nodes, wait_until

ROOT = Path(__file__).resolve().parent.parent
FLEETBUS_VARS = (
    "FLEETBUS_DOMAIN", "FLEETBUS_REGISTRY", "FLEETBUS_HOST", "FLEETBUS_TCP", "FLEETBUS_CLOCK",
    "FLEETBUS_KEYS",
)


class Child:
    """A node program (`python -m tests.procs ...`) running as a separate process."""

    def __init__(self, args: tuple[str, ...], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.log_path = log
        self.killed = False  # killed on purpose: its exit code and leftovers are expected
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.procs", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # signals reach it only when a test sends them
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.killed = True
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __repr__(self) -> str:
        return f"<pid {self.pid}: {' '.join(self.args)}>"


class Bus:
    """One test's bus. The test process joins it through FLEETBUS_RUN_DIR (set with
    monkeypatch, so child processes inherit it)."""

    def __init__(self, run_dir: Path, out_dir: Path) -> None:
        self.run_dir = run_dir
        self.out_dir = out_dir
        self.run_dirs = [run_dir]
        self.children: list[Child] = []
        self.nodes: list[fleetbus.Node] = []
        self.registries: list[Registry] = []
        self.closers: list[Any] = []
        self._logs = 0

    @property
    def config(self) -> BusConfig:
        return BusConfig.from_env()

    def new_run_dir(self) -> Path:
        """Another socket directory (another "host"), checked and removed at the end."""
        path = Path(tempfile.mkdtemp(prefix="fb-", dir="/tmp"))
        self.run_dirs.append(path)
        return path

    def out(self, name: str) -> Path:
        """A path for a file a child writes (not in the socket directory)."""
        return self.out_dir / name

    # -- registries ------------------------------------------------------------------------

    def registry(self, config: BusConfig | None = None, **kw: Any) -> Registry:
        """A registry on a thread of this process."""
        registry = Registry(config or self.config, **kw).start()
        self.registries.append(registry)
        return registry

    def registry_process(self, *args: str, env: dict[str, str | None] | None = None) -> Child:
        """A registry in its own process (for tests that kill it); returns once it answers."""
        child = self.spawn("registry", *args, env=env)
        config = _config_for(env)
        wait_until(lambda: fetch_graph(config, 0.2) is not None, what=f"registry {child}")
        return child

    # -- nodes -----------------------------------------------------------------------------

    def spawn(self, *args: str, env: dict[str, str | None] | None = None) -> Child:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        self._logs += 1
        child = Child(args, full_env, self.out_dir / f"child{self._logs}-{args[0]}.log")
        self.children.append(child)
        return child

    def start(self, node: fleetbus.Node, *, check: bool = True) -> fleetbus.Node:
        """Run `node` on a thread of this process and wait until its setup() finished."""
        self.nodes.append(node)
        node.start()
        assert node.ready.wait(10), f"{node.name}: setup() did not finish"
        if check and node.setup_error is not None:
            raise node.setup_error
        return node

    def node(self, name: str, setup: Any = None, **kw: Any) -> FnNode:
        node = FnNode(name, setup, **kw)
        self.start(node)
        return node

    def wait_for_nodes(self, *names: str, config: BusConfig | None = None) -> dict[str, Any]:
        """Wait until the registry lists every one of `names`; return the graph's nodes."""
        config = config or self.config
        return wait_until(
            lambda: (nodes := graph_nodes(config)) and all(n in nodes for n in names) and nodes,
            what=f"nodes {names} in the graph",
        )

    # -- cleanup ---------------------------------------------------------------------------

    def close(self) -> list[str]:
        errors = []
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            if not node.stopped.wait(10):
                errors.append(f"node {node.name} did not stop")
        for child in self.children:
            if child.proc.poll() is None:
                child.signal(signal.SIGTERM)
        for child in self.children:
            try:
                code = child.proc.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                errors.append(f"{child} ignored SIGTERM for 10 s")
                continue
            if code != 0 and not child.killed:
                errors.append(f"{child} exited with code {code}")
        for registry in self.registries:
            registry.stop()
            if registry._thread is not None and registry._thread.is_alive():
                errors.append(f"registry {registry.id} did not stop")
        for close in self.closers:
            close()
        for child in self.children:
            if child.killed:  # kill -9 leaves its socket files; that is expected
                for run_dir in self.run_dirs:
                    for path in run_dir.glob(f"{child.pid}-*"):
                        path.unlink()
        for run_dir in self.run_dirs:
            leftovers = sorted(p.name for p in run_dir.iterdir() if p.name != "registry.lock")
            if leftovers:
                errors.append(f"files left in {run_dir}: {leftovers}")
        for child in self.children:
            print(f"---- {child} (exit {child.proc.returncode})\n{child.log()}")
        for run_dir in self.run_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        return errors


def _config_for(env: dict[str, str | None] | None) -> BusConfig:
    """The BusConfig a child started with `env` (overrides of os.environ) will use."""
    if not env:
        return BusConfig.from_env()
    saved = {key: os.environ.get(key) for key in env}
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return BusConfig.from_env()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def bus_env(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private socket directory as FLEETBUS_RUN_DIR (short: ipc paths max ~107 chars)."""
    run_dir = Path(tempfile.mkdtemp(prefix="fb-", dir="/tmp"))
    monkeypatch.setenv("FLEETBUS_RUN_DIR", str(run_dir))
    monkeypatch.setenv("FLEETBUS_AUTOREGISTRY", "0")  # the test decides where the registry is
    for var in FLEETBUS_VARS:
        monkeypatch.delenv(var, raising=False)
    return run_dir


@pytest.fixture
def bare_bus(bus_env: Path, tmp_path: Path) -> Iterator[Bus]:
    """A bus without a registry (the test starts one the way it needs)."""
    bus = Bus(bus_env, tmp_path)
    yield bus
    errors = bus.close()
    if errors:
        pytest.fail("cleanup: " + "; ".join(errors))


@pytest.fixture
def bus(bare_bus: Bus) -> Bus:
    """A bus with a registry running on a thread of the test process."""
    bare_bus.registry()
    return bare_bus
