"""Routes (no bus): the speed profile keeps the guard's margin free ahead, honours the
speeds a mission asks for per leg, and the envelope's safe speed inverts the margin; a car
starting inside its margin eases out, takes bends on arcs it can steer, and is refused a
bend too tight for it."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from fleetbus.planners import Geofence, Zone
from fleetbus.planners.envelope import ENVELOPES, VehicleEnvelope
from fleetbus.planners.route import RoutePlanner

FIELD = Geofence([Zone.polygon("field", [(0, 0), (200, 0), (200, 200), (0, 200)])])
DRONE = ENVELOPES["quadrotor"]


def test_free_ahead_is_the_straight_run_to_the_fence():
    points = np.array([[50.0, 100.0], [50.0, 100.0], [199.0, 150.0], [250.0, 100.0]])
    directions = np.array([[1.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ahead = FIELD.free_ahead(points, directions, reach_m=100.0)
    assert math.isinf(ahead[0])  # 150 m to the east edge, more than the reach
    assert ahead[1] == pytest.approx(50.0)  # west; the direction need not be a unit vector
    assert ahead[2] == pytest.approx(50.0)
    assert ahead[3] == 0.0  # outside already


def test_free_ahead_sees_a_zone_only_in_its_altitude_band():
    mast = Zone.circle_zone("mast", (100, 100), 10.0, inclusion=False, floor_m=0.0,
                            ceiling_m=30.0)
    fence = FIELD.with_zone(mast)
    east = np.array([[1.0, 0.0]] * 2)
    ahead = fence.free_ahead(np.array([[50.0, 100.0, 20.0], [50.0, 100.0, 40.0]]), east, 100.0)
    assert ahead[0] == pytest.approx(40.0, abs=0.1)  # to the mast's edge at 20 m
    assert math.isinf(ahead[1])  # above the mast: free to the east edge, beyond reach


@pytest.mark.parametrize("free", [0.0, 2.0, 5.0, 8.0, 12.0, 40.0])
def test_safe_speed_is_the_fastest_whose_guard_margin_fits(free):
    env = DRONE
    v = float(env.safe_speed(np.array([free]))[0])
    assert 0.0 <= v <= env.max_speed_mps

    def needed(speed):
        return (env.static_margin_m + env.tracking_tolerance_m + speed * env.reaction_s
                + speed**2 / (2.0 * env.max_decel_mps2))

    if free <= needed(0.0):
        assert v == 0.0  # not even standing still fits: stop
    elif v < env.max_speed_mps:
        assert needed(v) == pytest.approx(free, abs=1e-9)
    else:
        assert needed(v) <= free + 1e-9


def test_a_route_toward_a_wall_slows_so_the_guard_would_not_stop_it():
    """A drone's route runs at a wall and turns along it: at every sample, the guard's
    margin at the planned speed fits into the free run straight ahead."""
    wall = Zone.polygon("wall", [(120, 0), (130, 0), (130, 150), (120, 150)], inclusion=False)
    fence = FIELD.with_zone(wall)
    planner = RoutePlanner(fence, DRONE)
    route = planner.plan([20.0, 100.0], [[100.0, 170.0], [180.0, 170.0]])
    assert route.ok, route.message
    sm = route.smoothed
    ahead = fence.free_ahead(sm.points, np.column_stack([np.cos(sm.heading),
                                                         np.sin(sm.heading)]), 1e3)
    v = route.speeds
    margin = (DRONE.static_margin_m + DRONE.tracking_tolerance_m + v * DRONE.reaction_s
              + v**2 / (2.0 * DRONE.max_decel_mps2))
    assert np.all(margin <= ahead + 1e-6)
    assert v.max() == pytest.approx(DRONE.max_speed_mps)  # and full speed where it is free


def test_a_leg_s_speed_caps_that_leg_only():
    planner = RoutePlanner(FIELD, DRONE)
    route = planner.plan([20.0, 20.0], [[20.0, 120.0], [20.0, 180.0]],
                         leg_speeds=[1.5, 0.0])
    assert route.ok
    y = route.smoothed.points[:, 1]
    assert route.speeds[y < 115.0].max() <= 1.5 + 1e-9
    assert route.speeds[(y > 130.0) & (y < 170.0)].max() > 3.0


def test_an_envelope_refuses_bad_numbers_by_name():
    with pytest.raises(ValueError, match="reaction_s"):
        VehicleEnvelope(reaction_s=-1.0)
    with pytest.raises(ValueError, match="max_decel_mps2"):
        VehicleEnvelope(max_decel_mps2=math.nan)


def test_a_drone_passes_each_waypoint_within_its_tolerance():
    """Lawnmower lanes and a U-turn home: rounded at the drone's top speed, the corners
    would pass 3.5 m (90 degrees) to 40 m (the U-turn) from their waypoints. A drone turns
    on the spot, so it stops and turns there instead; corners off the waypoints (around
    an obstacle) stay rounded."""
    waypoints = [[20.0, 20.0], [120.0, 20.0], [120.0, 40.0], [20.0, 40.0], [20.0, 60.0],
                 [120.0, 60.0], [10.0, 19.0]]
    route = RoutePlanner(FIELD, DRONE).plan([10.0, 20.0], waypoints,
                                            tolerances_m=[3.0] * len(waypoints))
    assert route.ok, route.message
    sm = route.smoothed
    for w in waypoints:
        assert np.min(np.hypot(*(sm.points - w).T)) <= 3.0, w
    stops = np.flatnonzero(np.isinf(sm.curvature))
    # a stop at every waypoint where the route turns: not the first (straight on from the
    # start) nor the last (the route's end)
    assert len(stops) == len(waypoints) - 2
    assert np.all(route.speeds[stops] == 0.0)
    rounded = RoutePlanner(FIELD, DRONE).plan([10.0, 20.0], waypoints)  # no tolerance given
    assert not np.isinf(rounded.smoothed.curvature).any()


CAR = replace(ENVELOPES["car"], max_speed_mps=3.0)  # margin 2.7 m
LANE = Zone.polygon("lane", [(0, -7), (100, -7), (100, 7), (0, 7)])


def _side_road(width: float) -> Geofence:
    return Geofence([LANE, Zone.polygon("side", [(86, -7), (86 + width, -7),
                                                 (86 + width, 80), (86, 80)])])


def test_a_car_starting_inside_its_margin_eases_out_to_it():
    """1.5 m from the lane's edge, inside the 2.7 m margin: the route is not refused but
    leaves at a shallow angle, never closer to the edge than the start, and keeps the
    full margin once out."""
    fence = Geofence([LANE])
    route = RoutePlanner(fence, CAR).plan([10.0, -5.5], [[90.0, 0.0]])
    assert route.ok, route.message
    points = route.smoothed.points
    depth = fence.signed_distance(points)
    assert depth.min() >= 1.5 * 0.95 - 1e-9
    assert np.all(depth[points[:, 0] > 40.0] >= CAR.margin_m - 1e-6)
    assert np.abs(np.diff(route.smoothed.heading)).max() < 0.15  # no sharp lead-in
    refused = RoutePlanner(fence, CAR).plan([10.0, -7.5], [[90.0, 0.0]])  # outside
    assert refused.status == "start_blocked"


@pytest.mark.parametrize("width", [24.0, 14.0])
def test_a_car_takes_a_right_angle_bend_on_arcs_it_can_steer(width):
    """From a start inside the margin (where the clearance re-plan used to be refused),
    the bend into a side road is one arc no tighter than the car's turn radius."""
    fence = _side_road(width)
    route = RoutePlanner(fence, CAR).plan([11.0, -4.2], [[70.0, -3.0], [86 + width / 2, 40]])
    assert route.ok and route.smoothed.ok, route.message
    assert np.abs(route.smoothed.curvature).max() <= 1.0 / CAR.turn_radius_m + 1e-9
    assert fence.signed_distance(route.smoothed.points).min() > 2.0


def test_a_bend_too_tight_for_a_car_is_refused_where_it_is():
    route = RoutePlanner(_side_road(6.0), CAR).plan([12.0, -3.0], [[70.0, -3.0], [89, 40]])
    assert route.status == "too_tight"
    assert "bend at (87." in route.message and "turn radius of 5.0 m" in route.message
    slow_drone = replace(DRONE, max_speed_mps=2.0)  # a margin of 2.4 m
    drone = RoutePlanner(_side_road(6.0), slow_drone).plan([12.0, -3.0],
                                                          [[70.0, -3.0], [89, 40]])
    assert drone.ok, drone.message  # a vehicle that turns on the spot stops there instead
