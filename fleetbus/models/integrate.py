"""Fixed-step integration shared by the simulator (numpy) and the MPC (CasADi)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def rk4(f: Callable[[Any, Any], Any], x: Any, u: Any, dt: float) -> Any:
    """One classical Runge-Kutta step of ẋ = f(x, u) with u held constant. Lists of
    floats give a list (the simulator's fast path); arrays and CasADi symbols, their own."""
    if type(x) is list:
        return _rk4_floats(f, x, u, dt)
    k1 = f(x, u)
    k2 = f(x + dt / 2 * k1, u)
    k3 = f(x + dt / 2 * k2, u)
    k4 = f(x + dt * k3, u)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _rk4_floats(f: Callable[[Any, Any], Any], x: list[float], u: list[float],
                dt: float) -> list[float]:
    half, sixth = dt / 2, dt / 6
    k1 = f(x, u)
    k2 = f([a + half * b for a, b in zip(x, k1, strict=True)], u)
    k3 = f([a + half * b for a, b in zip(x, k2, strict=True)], u)
    k4 = f([a + dt * b for a, b in zip(x, k3, strict=True)], u)
    return [a + sixth * (b + 2 * c + 2 * d + e)
            for a, b, c, d, e in zip(x, k1, k2, k3, k4, strict=True)]
