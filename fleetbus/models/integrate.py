"""Fixed-step integration shared by the simulator (numpy) and the MPC (CasADi)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rk4(f: Callable[[Any, Any], Any], x: Any, u: Any, dt: float) -> Any:
    """One classical Runge-Kutta step of ẋ = f(x, u) with u held constant."""
    k1 = f(x, u)
    k2 = f(x + dt / 2 * k1, u)
    k3 = f(x + dt / 2 * k2, u)
    k4 = f(x + dt * k3, u)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
