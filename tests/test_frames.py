"""The one place where fleetbus's frames (ENU world, FLU body) meet the autopilots' (NED,
FRD): known rotations by hand, and the defining property for any attitude."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetbus.sim_bridge.frames import (
    attitude_enu_ned,
    enu_ned,
    euler_ned,
    flu_frd,
    quat_multiply,
    rotate,
    rotate_inverse,
    yaw_quaternion_enu,
)

unit = st.floats(-1.0, 1.0)
vectors = st.tuples(st.floats(-100, 100), st.floats(-100, 100), st.floats(-100, 100))


@st.composite
def attitudes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    q = [draw(unit) for _ in range(4)]
    norm = math.sqrt(sum(c * c for c in q))
    if norm < 1e-3:
        return (1.0, 0.0, 0.0, 0.0)
    w, x, y, z = (c / norm for c in q)
    return (w, x, y, z)


def about(axis: tuple[float, float, float], angle: float) -> tuple[float, ...]:
    s = math.sin(angle / 2)
    return (math.cos(angle / 2), axis[0] * s, axis[1] * s, axis[2] * s)


def test_world_and_body_vectors_by_hand() -> None:
    assert enu_ned((1.0, 2.0, 3.0)) == (2.0, 1.0, -3.0)  # east, north, up -> north, east, down
    assert flu_frd((1.0, 2.0, 3.0)) == (1.0, -2.0, -3.0)  # left -> right, up -> down


@pytest.mark.parametrize(("q_enu", "euler"), [
    ((1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 90.0)),  # nose east
    (yaw_quaternion_enu(math.radians(90)), (0.0, 0.0, 0.0)),  # nose north
    (yaw_quaternion_enu(math.radians(30)), (0.0, 0.0, 60.0)),  # 30 deg left of east
    (yaw_quaternion_enu(math.radians(-90)), (0.0, 0.0, 180.0)),  # nose south
    (about((0.0, -1.0, 0.0), math.radians(10)), (0.0, 10.0, 90.0)),  # east, nose up
    (about((1.0, 0.0, 0.0), math.radians(20)), (20.0, 0.0, 90.0)),  # east, right wing down
])
def test_known_attitudes(q_enu: tuple[float, ...], euler: tuple[float, float, float]) -> None:
    roll, pitch, yaw = (math.degrees(a) for a in euler_ned(attitude_enu_ned(q_enu)))
    assert (roll, pitch, yaw % 360) == pytest.approx(euler, abs=1e-9)


@given(attitudes(), vectors)
def test_a_body_vector_lands_on_the_same_world_vector(q: tuple[float, ...],
                                                      v: tuple[float, float, float]) -> None:
    """What defines the conversion: rotating a body vector into the world gives the same
    physical vector in either convention."""
    ours = enu_ned(rotate(q, v))
    theirs = rotate(attitude_enu_ned(q), flu_frd(v))
    assert theirs == pytest.approx(ours, abs=1e-9)
    assert rotate_inverse(attitude_enu_ned(q), theirs) == pytest.approx(flu_frd(v), abs=1e-9)


@given(attitudes())
def test_the_attitude_map_is_its_own_inverse_and_keeps_w_non_negative(q: tuple[float, ...]
                                                                       ) -> None:
    there = attitude_enu_ned(q)
    back = attitude_enu_ned(there)
    assert there[0] >= 0
    # q and -q are the same rotation
    assert min(max(abs(a - b) for a, b in zip(back, q, strict=True)),
               max(abs(a + b) for a, b in zip(back, q, strict=True))) < 1e-12


def test_quaternion_product_composes_rotations() -> None:
    quarter = about((0.0, 0.0, 1.0), math.pi / 2)
    assert rotate(quat_multiply(quarter, quarter), (1.0, 0.0, 0.0)) == pytest.approx(
        (-1.0, 0.0, 0.0))
