"""Simulated vehicles: a model, its state, its last command and what is safe to do
without one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fleetbus.models import Bicycle, Otter, Quadrotor, Vessel

Kind = Literal["quadrotor", "vessel", "car"]


def make_model(kind: Kind, params: dict[str, Any] | None = None) -> Any:
    """A vehicle model from its kind and parameter overrides (ValueError names the bad
    one: an unknown name, or an impossible value such as a negative mass). A vessel's
    `hull` is `cybership2` (the default) or `otter`."""
    classes = {"quadrotor": Quadrotor, "vessel": Vessel, "car": Bicycle}
    if kind not in classes:
        raise ValueError(f"unknown vehicle type {kind!r} (known: {', '.join(classes)})")
    params = dict(params or {})
    cls = classes[kind]
    if kind == "vessel":
        hulls = {"cybership2": Vessel, "otter": Otter}
        hull = params.pop("hull", "cybership2")
        if hull not in hulls:
            raise ValueError(f"vessel: unknown hull {hull!r} (known: {', '.join(hulls)})")
        cls = hulls[hull]
    try:
        return cls(**params)
    except TypeError as exc:  # an unknown parameter name
        raise ValueError(f"{kind}: {exc}") from None


def initial_state(kind: Kind, model: Any, start: dict[str, float]) -> np.ndarray:
    """The state at rest at a start pose {x, y, z, yaw}."""
    x = np.zeros(len(model.states))
    x[0], x[1] = start.get("x", 0.0), start.get("y", 0.0)
    yaw = start.get("yaw", 0.0)
    if kind == "quadrotor":
        x[2] = start.get("z", 0.0)
        x[6], x[9] = np.cos(yaw / 2), np.sin(yaw / 2)  # rotation about z
    else:
        x[2] = yaw
    return x


@dataclass
class SimVehicle:
    id: str
    kind: Kind
    model: Any
    state: np.ndarray
    command: np.ndarray | None = None
    command_time_s: float = -np.inf
    stale_steps: int = 0  # physics steps run on the safe command
    rejected_commands: int = 0
    override_time_s: float = -np.inf  # last failsafe command (it outranks the controller)
    overridden_commands: int = 0  # controller commands ignored while a failsafe held
    lower: np.ndarray = field(init=False)
    upper: np.ndarray = field(init=False)
    applied: np.ndarray = field(init=False)  # the input of the last physics step
    rate: np.ndarray = field(init=False)  # mean state derivative over the last step

    def __post_init__(self) -> None:
        lower, upper = self.model.input_bounds
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.applied = self.safe_command()
        self.rate = np.zeros_like(self.state)  # at rest

    def safe_command(self) -> np.ndarray:
        """Hover in place (quadrotor), no thrust (vessel), brake (car)."""
        if self.kind == "quadrotor":
            return np.array(self.model.hover_input)
        if self.kind == "car":
            speed = self.state[3]
            return np.array([-self.model.max_decel_mps2 if speed > 0.05 else -speed, 0.0])
        return np.zeros(2)
