"""What the controller tracks (fleetbus.control.reference): the reference anchored at the
vehicle's projection onto the path, progress along it, the corridor cell of each stage;
and the model state read from an estimate (fleetbus.control.tracking.model_state)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from shapely.geometry import box

from fleetbus.control.reference import MIN_ADVANCE, PathReference
from fleetbus.control.tracking import model_state
from fleetbus.estimation.drone import rotation
from fleetbus.estimation.estimate import wrap
from fleetbus.messages import Header, Odometry, Twist, Vector3
from fleetbus.nodes.conversions import estimate_from_odometry
from fleetbus.nodes.simulator import vehicle_state
from fleetbus.planners.smoothing import fillet_path, speed_profile
from fleetbus.sim_bridge.vehicles import SimVehicle, initial_state, make_model
from fleetbus.sim_bridge.world import World

EVERYWHERE = (np.array([[0.0, 1.0]]), np.array([1e6]))  # one cell holding the whole test


def cell(x0: float, x1: float, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """x0 <= x <= x1, |y| <= half_width."""
    A = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return A, np.array([x1, -x0, half_width, half_width])


def line(length: float, step: float = 1.0, speed: float = 2.0, cells=None) -> PathReference:
    x = np.linspace(0.0, length, round(length / step) + 1)
    points = np.column_stack([x, np.zeros_like(x)])
    return PathReference(points, np.full(len(x), speed), cells or [EVERYWHERE])


def arc_lengths(h, start: np.ndarray) -> np.ndarray:
    """Arc length of each reference point along a straight path from `start`."""
    return np.linalg.norm(h.ref[:2].T - start, axis=1)


# -- the reference ------------------------------------------------------------------------


def test_the_reference_starts_at_the_projection_and_runs_at_the_path_speed():
    # A diagonal path, so the projection is not just a coordinate copied.
    points = np.array([[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]])
    path = PathReference(points, [2.0, 2.0, 2.0], [EVERYWHERE])
    h = path.horizon([2.0, 4.0], 20, 0.1)  # beside the path: its projection is (3, 3)
    assert h.ref.shape == (3, 21)
    assert h.ref[:2, 0] == pytest.approx([3.0, 3.0])
    assert h.progress_m == pytest.approx(3 * math.sqrt(2))
    assert h.remaining_m == pytest.approx(path.length_m - 3 * math.sqrt(2))
    # every stage 2 m/s * 0.1 s further along the path, at the path's speed
    assert np.diff(arc_lengths(h, np.zeros(2))) == pytest.approx(np.full(20, 0.2))
    assert h.ref[0] == pytest.approx(h.ref[1])  # on the path
    assert h.ref[2] == pytest.approx(np.full(21, 2.0))


def test_a_drone_reference_carries_the_altitude_of_the_path():
    points = np.array([[0.0, 0.0, 5.0], [10.0, 0.0, 7.0]])
    path = PathReference(points, [1.0, 1.0], [EVERYWHERE])
    h = path.horizon([5.0, 0.5, 6.0], 10, 0.1)
    assert h.ref.shape == (4, 11)  # x, y, z, speed
    assert h.ref[:3, 0] == pytest.approx([5.0, 0.0, 6.0])
    assert h.ref[2] == pytest.approx(5.0 + 0.2 * h.ref[0])  # z along the path's slope
    assert h.ref[3] == pytest.approx(np.ones(11))


def test_the_reference_follows_the_speed_profile_and_stops_at_the_end():
    s = np.linspace(0.0, 10.0, 41)
    speeds = speed_profile(s, np.zeros_like(s), 2.0, 2.0, 1.0, 1.0)  # from rest to rest
    path = PathReference(np.column_stack([s, np.zeros_like(s)]), speeds, [EVERYWHERE])
    dt, floor = 0.1, MIN_ADVANCE * speeds.max()

    # From rest the profile says 0 m/s: the reference still creeps forward, at the floor.
    h = path.horizon([0.0, 0.0], 10, dt)
    assert h.ref[0, 1] - h.ref[0, 0] == pytest.approx(floor * dt)
    assert h.ref[2, 0] == 0.0

    h = path.horizon([7.0, 0.3], 40, dt)
    x = h.ref[0]
    # Each stage advances by the profile's speed where it is (at least the floor) ...
    expected = np.maximum(np.interp(x[:-1], s, speeds), floor) * dt
    assert np.diff(x) == pytest.approx(np.minimum(expected, 10.0 - x[:-1]))
    # ... the speeds are the profile's there, and it stops at the end, at rest.
    assert h.ref[2] == pytest.approx(np.interp(x, s, speeds))
    assert np.all(np.diff(x) >= 0.0) and x.max() == pytest.approx(10.0)
    assert x[-5:] == pytest.approx(np.full(5, 10.0)) and h.ref[2, -1] == 0.0

    h = path.horizon([10.2, 0.0], 10, dt)  # past the end: held there
    assert h.remaining_m == pytest.approx(0.0)
    assert h.ref[:2] == pytest.approx(np.tile([[10.0], [0.0]], 11))
    assert h.ref[2] == pytest.approx(np.zeros(11))


def test_progress_follows_a_loop_all_the_way_round():
    """A circle that ends where it starts: the vehicle at the start is at its beginning,
    back there at the end it is at its end (the search runs forward from the last
    projection, so the nearby start of the path is not taken)."""
    angle = np.linspace(0.0, 2 * np.pi, 121)
    points = 10 * np.column_stack([np.sin(angle), 1 - np.cos(angle)])
    path = PathReference(points, np.ones(121), [EVERYWHERE])
    assert path.horizon([0.0, -0.2], 5, 0.1).progress_m == pytest.approx(0.0, abs=1e-9)
    progress = []
    for a in np.radians(np.arange(10, 361, 10)):
        progress.append(path.horizon([10.3 * math.sin(a), 10 - 10.3 * math.cos(a)], 5,
                                     0.1).progress_m)
    assert np.all(np.diff(progress) > 0)
    assert progress[-1] == pytest.approx(path.length_m)


def test_a_vehicle_pushed_back_is_followed_back():
    """The reference starts where the vehicle is: pushed back along its path (a gust, a
    wave), it is asked to go on from there, not from where it had got to."""
    path = line(10.0)
    progress = [path.horizon([x, 0.3], 5, 0.1).progress_m for x in (5.0, 5.6, 5.2, 4.5, 3.0)]
    assert progress == pytest.approx([5.0, 5.6, 5.2, 4.5, 3.0])


def test_a_u_turn_is_not_short_cut():
    turn = fillet_path([[0, 0], [5, 0], [5, 2], [0, 2]], box(-10, -10, 10, 10), 1.0)
    assert turn.ok
    path = PathReference(turn.points, np.ones(len(turn.points)), [EVERYWHERE])
    assert path.horizon([0.0, 0.0], 5, 0.1).progress_m == pytest.approx(0.0)
    assert path.horizon([1.0, 1.1], 5, 0.1).progress_m == pytest.approx(1.0, abs=0.1)


# -- corridor cells -----------------------------------------------------------------------

# Two cells along the x axis overlapping over 4 <= x <= 6. The path's samples (one a
# metre) lie deeper in the second from x = 6 on: samples 0-5 own cell 0, 6-10 cell 1.
TWO = [cell(-1.0, 6.0, 1.0), cell(4.0, 11.0, 1.0)]


def test_each_sample_owns_the_cell_it_lies_deepest_in_in_path_order():
    assert line(10.0, cells=TWO).sample_cells.tolist() == [0] * 6 + [1] * 5


def test_a_stage_moves_to_the_next_cell_where_its_reference_enters_it():
    path = line(10.0, cells=TWO)
    h = path.horizon([2.0, 0.0], 20, 0.1)  # reference at x = 2.0, 2.2 ... 6.0
    assert h.cells == [0] * 10 + [1] * 10  # stage 10 (x = 4.0) is the first in cell 1
    assert all(h.corridor[k] is path.cells[c] for k, c in enumerate(h.cells))


def test_a_stage_moves_on_only_once_the_previous_plan_is_in_the_next_cell_too():
    path = line(10.0, cells=TWO)
    # The last plan lags the reference: its stage k is at x = 2 + 0.15 k, in cell 1 from
    # k = 14 (x = 4.1).
    lagging = np.column_stack([2.0 + 0.15 * np.arange(21), np.zeros(21)])
    assert path.horizon([2.0, 0.0], 20, 0.1, lagging).cells == [0] * 14 + [1] * 6
    # A plan that never reaches the overlap keeps every stage in the first cell.
    short = np.column_stack([np.minimum(2.0 + 0.15 * np.arange(21), 3.9), np.zeros(21)])
    assert path.horizon([2.0, 0.0], 20, 0.1, short).cells == [0] * 20
    # Nor does a plan that is level with the reference but outside the next cell.
    beside = np.column_stack([2.0 + 0.2 * np.arange(21), np.full(21, 1.5)])
    assert path.horizon([2.0, 0.0], 20, 0.1, beside).cells == [0] * 20


def test_cells_advance_but_not_past_one_beyond_the_progress():
    path = line(10.0, cells=TWO)
    assert path.horizon([7.0, 0.0], 5, 0.1).cells == [1] * 5
    # Back in the first cell's stretch (pushed back, say): it stays with the second, one
    # past its progress's cell, where the softened constraints steer it.
    assert path.horizon([3.0, 0.0], 5, 0.1).cells == [1] * 5


def test_a_vehicle_off_its_path_gets_the_cells_of_its_progress_along_it():
    path = line(10.0, cells=[cell(-1.0, 6.0, 1.0), cell(4.0, 11.0, 2.5)])
    assert path.horizon([2.0, 3.0], 5, 0.1).cells[0] == 0  # outside both: its stretch's
    assert path.horizon([8.0, 3.0], 5, 0.1).cells[0] == 1


def test_side_by_side_lanes_keep_their_own_cells():
    """A survey's lanes 20 m apart, each segment's cell 20 m wide on either side, so the
    cells of neighbouring lanes overlap: a vehicle on the return lane stays in its cell,
    at most one ahead (jumping on to the next lane's, which holds it too, pinned a drone
    at a lane's end for good)."""
    corners = np.array([[0, 0], [100, 0], [100, 20], [0, 20], [0, 40], [100, 40]], float)
    points = np.vstack([np.linspace(a, b, 41)[:-1] for a, b in itertools.pairwise(corners)]
                       + [corners[-1:]])
    boxes = [(-20, 120, -20, 20), (80, 120, -20, 40), (-20, 120, 0, 40), (-20, 20, 0, 60),
             (-20, 120, 20, 60)]
    A = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    cells = [(A, np.array([x1, -x0, y1, -y0])) for x0, x1, y0, y1 in boxes]
    path = PathReference(points, np.full(len(points), 5.0), cells)
    walked = []
    for q in points[::2]:  # the vehicle follows its path, 1 m off to one side
        h = path.horizon(q + np.array([0.0, 1.0]), 20, 0.1)
        walked.append((q, h.cells[0]))
    for q, first in walked:  # its lane's cell, or the next one where they overlap
        lane = 0 if q[1] == 0 and q[0] < 100 else 2 if q[1] == 20 and 0 < q[0] < 100 else (
            4 if q[1] == 40 and q[0] > 0 else None)
        assert lane is None or first in (lane, lane + 1), (q, first)
        assert lane != 2 or q[0] <= 20 or first == 2, (q, first)  # mid-lane: its own


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(("points", "speeds", "cells", "match"), [
    ([[0.0, 0.0]], [1.0], [EVERYWHERE], "need >= 2 points"),
    ([], [], [EVERYWHERE], "need >= 2 points"),
    ([[0.0, 0.0], [1.0, 0.0]], [1.0], [EVERYWHERE], "one speed each"),
    ([[0.0, 0.0], [1.0, 0.0]], [1.0, 1.0, 1.0], [EVERYWHERE], "one speed each"),
    ([[0.0, 0.0], [np.nan, 0.0]], [1.0, 1.0], [EVERYWHERE], "finite"),
    ([[0.0, 0.0], [np.inf, 0.0]], [1.0, 1.0], [EVERYWHERE], "finite"),
    ([[0.0, 0.0], [1.0, 0.0]], [1.0, np.nan], [EVERYWHERE], "finite"),
    ([[0.0, 0.0], [1.0, 0.0]], [1.0, -0.5], [EVERYWHERE], "speeds >= 0"),
    ([[0.0, 0.0], [1.0, 0.0]], [1.0, 1.0], [], "at least one cell"),
])
def test_a_bad_path_is_refused_by_name(points, speeds, cells, match):
    with pytest.raises(ValueError, match=match):
        PathReference(points, speeds, cells)


def test_a_cell_that_is_not_finite_is_refused():
    with pytest.raises(ValueError, match="finite"):
        PathReference([[0.0, 0.0], [1.0, 0.0]], [1.0, 1.0],
                      [(np.array([[0.0, 1.0]]), np.array([np.nan]))])


# -- the model state from an estimate -----------------------------------------------------


@pytest.mark.parametrize("kind", ["car", "vessel", "quadrotor"])
def test_model_state_reads_back_the_simulated_state(kind):
    """Simulate a vehicle turning (and, for the drone, tilted and climbing), report it as
    the simulator does (vehicle_state), turn that into the Odometry an estimator would
    publish (velocity in the body frame), read it as the controller does: the model state
    comes back."""
    model = make_model(kind)
    vehicle = SimVehicle("v", kind, model, initial_state(kind, model, {"x": 3.0, "y": -2.0,
                                                                       "z": 5.0, "yaw": 2.5}))
    world = World([vehicle], 0.01, command_timeout_s=10.0)
    if kind == "quadrotor":
        world.command("v", [1.1 * model.hover_thrust_n, 0.3, -0.2, 0.4])
    else:
        world.command("v", {"car": [2.0, 0.3], "vessel": [6.0, 0.5]}[kind])
    for _ in range(150):
        world.step()
    truth = vehicle_state(vehicle, 123_000_000)
    q = truth.pose.orientation
    v = truth.twist.linear
    body = rotation(np.array([q.w, q.x, q.y, q.z])).T @ np.array([v.x, v.y, v.z])
    # The ground-truth message carries no body rates (twist.angular stays zero): the
    # ship's yaw rate, part of its model state, is taken from the simulation.
    rates = Vector3(z=float(vehicle.state[5])) if kind == "vessel" else Vector3()
    odometry = Odometry(header=Header(stamp_ns=truth.header.stamp_ns, frame_id="map"),
                        pose=truth.pose, twist=Twist(linear=Vector3(x=float(body[0]),
                                                                    y=float(body[1]),
                                                                    z=float(body[2])),
                                                     angular=rates))
    x = model_state(kind, estimate_from_odometry(odometry))
    expected = vehicle.state
    assert x.shape == expected.shape and np.all(np.isfinite(x))
    if kind != "quadrotor":
        assert abs(wrap(x[2] - expected[2])) < 1e-9  # the simulator's yaw is not wrapped
        x, expected = np.delete(x, 2), np.delete(expected, 2)
    assert x == pytest.approx(expected, abs=1e-9)
    # ... and the vehicle was really moving, turning (and tilted).
    assert np.linalg.norm(vehicle.state[3:5]) > 0.1
    if kind == "quadrotor":
        assert abs(vehicle.state[7]) > 0.1


def test_model_state_refuses_an_unknown_vehicle_type():
    estimate = estimate_from_odometry(Odometry())
    with pytest.raises(ValueError, match="submarine"):
        model_state("submarine", estimate)


def test_a_cell_of_the_next_lane_holding_the_vehicle_is_not_jumped_to():
    """Survey lanes side by side: lane 1 east along y = 0 (cell 0), the turn (cell 1),
    lane 2 back west along y = 10 (cell 2), whose cell reaches down over lane 1. The
    vehicle mid-lane 1 is inside cells 0 and 2; it stays in cell 0 until the turn."""
    points = [[0.0, 0.0], [50.0, 0.0], [50.0, 10.0], [0.0, 10.0]]
    cells = [rect(-5, 55, -5, 4), rect(45, 55, -5, 15), rect(-5, 55, 2, 15)]
    ref = PathReference(points, [2.0] * 4, cells)
    horizon = ref.horizon([25.0, 3.0], 10, 0.1)
    assert horizon.cells[0] == 0


def rect(x0: float, x1: float, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]), np.array([x1, -x0,
                                                                                  y1, -y0])
