"""The few operations the dynamics need, for numpy values and for CasADi symbols.

A model's `f(x, u)` indexes `x` and `u`, uses + - * /, and calls these functions; it
returns `stack([...])`. With numpy inputs that is a float array; with CasADi SX/MX inputs
it is a symbolic column — the same code, not two copies. With Python lists of floats
(the simulator's hot path) it is a list: float arithmetic is several times cheaper than
arithmetic on numpy scalars, and gives the same bits.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

NUMPY = SimpleNamespace(
    sin=np.sin, cos=np.cos, tan=np.tan, sqrt=np.sqrt, fabs=np.abs,
    stack=lambda items: np.array(items, dtype=float),
)

PLAIN = SimpleNamespace(
    sin=math.sin, cos=math.cos, tan=math.tan, sqrt=math.sqrt, fabs=abs, stack=list,
)


def _casadi() -> SimpleNamespace:
    import casadi as ca  # imported only when symbols are used: simulation needs numpy only

    return SimpleNamespace(
        sin=ca.sin, cos=ca.cos, tan=ca.tan, sqrt=ca.sqrt, fabs=ca.fabs,
        stack=lambda items: ca.vertcat(*items),
    )


def backend(*values: Any) -> SimpleNamespace:
    """Plain float operations for lists, CasADi operations if any value is a CasADi
    expression, else numpy."""
    if all(type(v) is list for v in values):  # the simulator's hot path
        return PLAIN
    if all(type(v) is np.ndarray for v in values):
        return NUMPY
    if any(type(v).__module__.startswith("casadi") for v in values):
        return _casadi()
    return NUMPY
