"""Where a bus lives: its socket directory, registry endpoint and host identity.

Everything comes from environment variables so that a launch file, a test or a shell
can point a process at a bus without code changes:

- ``FLEETBUS_DOMAIN``   bus name (default ``default``); separate domains never meet.
- ``FLEETBUS_RUN_DIR``  directory for ipc socket files (default
  ``$XDG_RUNTIME_DIR/fleetbus/<domain>`` or ``/tmp/fleetbus-<uid>/<domain>``), mode 0700.
- ``FLEETBUS_REGISTRY`` registry endpoint (default ``ipc://<run dir>/registry``).
- ``FLEETBUS_HOST``     host identity used to choose ipc (same host) or tcp (other host).
- ``FLEETBUS_TCP``      interface to also expose node sockets on over tcp, e.g. 127.0.0.1.
- ``FLEETBUS_CLOCK``    ``wall`` (default) or ``sim`` (follow ``/clock``).
- ``FLEETBUS_AUTOREGISTRY`` ``0`` stops ``fleetbus.run`` from embedding a registry when
  none answers.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class BusConfig:
    run_dir: Path
    registry: str
    host: str
    tcp_interface: str | None = None
    clock: str = "wall"
    auto_registry: bool = True

    @classmethod
    def from_env(cls, **overrides: object) -> BusConfig:
        env = os.environ
        domain = env.get("FLEETBUS_DOMAIN", "default")
        if env.get("FLEETBUS_RUN_DIR"):
            run_dir = Path(env["FLEETBUS_RUN_DIR"])
        elif env.get("XDG_RUNTIME_DIR"):
            run_dir = Path(env["XDG_RUNTIME_DIR"]) / "fleetbus" / domain
        else:
            run_dir = Path(tempfile.gettempdir()) / f"fleetbus-{os.getuid()}" / domain
        clock = env.get("FLEETBUS_CLOCK", "wall")
        if clock not in ("wall", "sim"):
            raise ValueError(f"FLEETBUS_CLOCK must be 'wall' or 'sim', not {clock!r}")
        config = cls(
            run_dir=run_dir,
            registry=env.get("FLEETBUS_REGISTRY") or f"ipc://{run_dir}/registry",
            host=env.get("FLEETBUS_HOST") or socket.gethostname(),
            tcp_interface=env.get("FLEETBUS_TCP") or None,
            clock=clock,
            auto_registry=env.get("FLEETBUS_AUTOREGISTRY", "1") != "0",
        )
        return replace(config, **overrides) if overrides else config

    def ensure_run_dir(self) -> Path:
        """Create the socket directory readable by this user only."""
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.run_dir, 0o700)
        return self.run_dir


def remove_ipc_files(urls: list[str]) -> None:
    """Delete the socket files of closed ipc endpoints. ZeroMQ unlinks them in its I/O
    thread, which may not get to it before the process exits; we know the paths."""
    for url in urls:
        if url.startswith("ipc://"):
            try:
                os.unlink(url[len("ipc://"):])
            except FileNotFoundError:
                pass
