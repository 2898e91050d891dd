"""The scenario catalog: seeded end-to-end missions for the three vehicle types, each with
its fence, weather, start and fault plan, and the outcome the stack must reach.

Layout of `launch/geofences/fleet.geojson` in ENU metres (origin 59.9 N, 10.7 E):

- quadrotor: airspace x -160..260, y -160..160, ceiling 60 m; no-fly mast cylinder at
  (50, -100), radius 12 m, 0..30 m altitude;
- vessel: basin x -150..-95, y -50..50; channel x -100..-35, y -12..12; anchorage
  x -40..40, y -60..60; moored ships (-140..-125, 15..30) and (-120..-105, -35..-20);
  breakwater (-10..10, -60..-30);
- car: roads (20 m wide) south y -110..-90, middle y -10..10, north y 90..110 (x 40..250),
  west x 40..60, centre x 140..160, east x 230..250 (y -110..110); closed street
  (138..162, 14..86) on the centre road.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Scenario:
    """One end-to-end run. `expect` is the final MissionStatus.state the run must end in
    ("completed" or "failed"); `doc` says what the scenario proves."""

    name: str
    vehicle_type: str  # quadrotor | vessel | car
    start: tuple[float, float, float, float]  # x, y, z (quadrotor only), yaw
    waypoints: tuple[Point, ...]
    doc: str
    model: dict[str, Any] = field(default_factory=dict)  # simulator model overrides
    node_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per node
    faults: tuple[dict[str, Any], ...] = ()
    geofence: str = "fleet.geojson"  # tests/scenarios/data, else launch/geofences
    expect: str = "completed"
    seed: int = 1
    max_sim_s: float = 60.0
    timeout_s: float = 0.0  # the mission's own timeout (0: none)
    accept_m: float = 3.0
    crash_controller_at_s: float | None = None
    expect_event: str = ""  # words an event about the vehicle must contain
    xfail: str = ""  # a known product problem, with its figures: the scenario is expected
    xfail_strict: bool = True  # to fail (strict: it must fail, else the mark is stale)
    slow: bool = True

    @property
    def max_wall_s(self) -> float:
        """Generous: the wall limit only matters when something is broken."""
        return 60.0 + 4.0 * self.max_sim_s


PI = 3.141592653589793
DRAG = 0.3  # 1/s: what lets the wind act on a quadrotor (the model's default is none)
OTTER = {"hull": "otter"}
TOWN = {"planner": {"envelope": {"max_speed_mps": 6.0}}}  # a town's speed, as car_route


def _quad(name: str, start: tuple[float, float, float], waypoints: tuple[Point, ...],
          doc: str, **kw: Any) -> Scenario:
    return Scenario(name=name, vehicle_type="quadrotor", start=(*start, 0.0),
                    waypoints=waypoints, doc=doc, **kw)


def _ship(name: str, start: tuple[float, float, float], waypoints: tuple[Point, ...],
          doc: str, current: tuple[float, float] = (0.0, 0.0), **kw: Any) -> Scenario:
    x, y, yaw = start
    return Scenario(name=name, vehicle_type="vessel", start=(x, y, 0.0, yaw),
                    waypoints=waypoints, doc=doc,
                    model={**OTTER, "current_enu_mps": list(current)}, **kw)


def _car(name: str, start: tuple[float, float, float], waypoints: tuple[Point, ...],
         doc: str, **kw: Any) -> Scenario:
    x, y, yaw = start
    kw.setdefault("node_params", TOWN)
    return Scenario(name=name, vehicle_type="car", start=(x, y, 0.0, yaw),
                    waypoints=waypoints, doc=doc, **kw)


def _wind(east: float, north: float, up: float = 0.0, drag: float = DRAG) -> dict[str, Any]:
    return {"wind_enu_mps": [east, north, up], "drag_per_kg": drag}


QUADROTOR = [
    _quad("quad_short_hop", (-10.0, -140.0, 20.0),
          ((20.0, -140.0, 20.0), (20.0, -120.0, 20.0)),
          "In still air a quadrotor flies two short legs at 20 m in the field south-west "
          "of the mast and completes.", slow=False),
    _quad("quad_headwind", (-10.0, -140.0, 20.0), ((40.0, -140.0, 20.0),),
          "Against a 4 m/s headwind (linear drag) the MPC still reaches a waypoint 50 m "
          "upwind.", model=_wind(-4.0, 0.0)),
    _quad("quad_crosswind_toward_mast", (10.0, -126.0, 20.0),
          ((45.0, -126.0, 20.0), (90.0, -126.0, 20.0)),
          "A 3 m/s crosswind blows the drone towards the mast's no-fly cylinder while it "
          "passes 14 m south of its edge: it holds its line and keeps its margin.",
          model=_wind(0.0, 3.0), seed=3),
    _quad("quad_detour_around_mast", (10.0, -100.0, 20.0), ((90.0, -100.0, 20.0),),
          "The straight line runs through the mast (no-fly up to 30 m, the drone flies "
          "at 20 m): the planner goes around it and the drone never enters it.",
          max_sim_s=70.0),
    _quad("quad_gusty_triangle", (0.0, -60.0, 25.0),
          ((30.0, -60.0, 25.0), (15.0, -35.0, 25.0), (0.0, -60.0, 25.0)),
          "A triangle at 25 m in a diagonal wind with a downdraught: every leg meets the "
          "wind at another angle.", model=_wind(2.0, -2.0, -0.5, 0.4), seed=5,
          max_sim_s=70.0),
    _quad("quad_west_edge_wind", (-150.0, -100.0, 20.0), ((-150.0, -60.0, 20.0),),
          "Starting 10 m inside the airspace's west edge with the wind pushing it out, "
          "the drone flies along the edge without touching it.", model=_wind(-2.5, 0.0)),
    _quad("quad_south_edge_start", (0.0, -151.0, 22.0),
          ((40.0, -150.0, 22.0), (40.0, -135.0, 22.0)),
          "Starting 9 m inside the airspace's south edge, at 22 m, the drone moves along "
          "and then away from it.", seed=11),
    _quad("quad_corridor", (0.0, 2.0, 20.0),
          ((60.0, 0.0, 20.0), (60.0, 50.0, 20.0)),
          "In an L-shaped corridor 20 m wide with a tower's no-fly cylinder reaching 5 m "
          "into it (tests/scenarios/data/quad_corridor.geojson), the drone threads past "
          "the tower and turns the corner.", geofence="quad_corridor.geojson",
          max_sim_s=70.0),
    _quad("quad_gnss_glitch", (-10.0, -140.0, 20.0),
          ((30.0, -140.0, 20.0), (30.0, -120.0, 20.0)),
          "A single GNSS outlier 25 m off (east) and 10 m south at 4 s is not followed: "
          "the drone does not jump towards the fence and completes.",
          faults=({"at": 4.0, "target": "drone1/gnss", "type": "glitch",
                   "offset": [25.0, -10.0, 0.0]},)),
    _quad("quad_gnss_dropout", (-10.0, -140.0, 20.0),
          ((30.0, -140.0, 20.0), (30.0, -120.0, 20.0)),
          "GNSS lost for 5 s mid-leg: the estimate dead-reckons on the IMU and the drone "
          "completes without drifting into the fence.",
          faults=({"at": 3.0, "for": 5.0, "target": "drone1/gnss", "type": "dropout"},)),
    _quad("quad_gnss_delay", (-10.0, -140.0, 20.0),
          ((30.0, -140.0, 20.0), (30.0, -120.0, 20.0)),
          "GNSS fixes arrive 0.3 s late (stamped when measured) for 10 s; fusion copes.",
          faults=({"at": 2.0, "for": 10.0, "target": "drone1/gnss", "type": "delay",
                   "delay_s": 0.3},)),
    _quad("quad_link_loss", (-10.0, -140.0, 20.0),
          ((30.0, -140.0, 20.0), (30.0, -120.0, 20.0)),
          "The vehicle's link drops for 1 s (no sensor out, no command in): it rides "
          "out the gap on its last command and completes.",
          faults=({"at": 4.0, "for": 1.0, "target": "drone1", "type": "link_loss"},)),
    _quad("quad_controller_crash", (-10.0, -140.0, 20.0),
          ((30.0, -140.0, 20.0), (30.0, -120.0, 20.0)),
          "The controller's process is killed (-9) at 4 s: the supervisor restarts it and "
          "the drone completes its mission.", crash_controller_at_s=4.0, max_sim_s=70.0),
]

VESSEL = [
    _ship("ship_basin_hop", (-135.0, 0.0, 0.0), ((-110.0, 0.0, 0.0),),
          "The Otter crosses 25 m of the harbour basin in still water and completes.",
          slow=False),
    _ship("ship_into_channel", (-135.0, 0.0, 0.0),
          ((-90.0, 0.0, 0.0), (-65.0, 0.0, 0.0)),
          "From its berth into the 24 m wide channel against the harbour's cross current "
          "(0.08 m/s north), as ship_harbor, without touching the channel's sides.",
          current=(0.0, 0.08), max_sim_s=90.0),
    _ship("ship_channel_strong_current", (-95.0, 0.0, 0.0), ((-50.0, 0.0, 0.0),),
          "A 0.25 m/s cross current in the channel: the hull crabs but keeps its "
          "clearance from the channel's north side.", current=(0.0, 0.25), seed=4,
          max_sim_s=70.0),
    _ship("ship_head_current", (-95.0, 0.0, 0.0), ((-55.0, 0.0, 0.0),),
          "Up the channel against a 0.3 m/s head current.", current=(-0.3, 0.0),
          max_sim_s=80.0),
    _ship("ship_past_moored_ship", (-135.0, 0.0, 1.5708), ((-118.0, 40.0, 0.0),),
          "The straight line to the goal crosses the moored ship A: the planner passes "
          "east of it and the hull keeps its margin.", max_sim_s=70.0),
    _ship("ship_start_near_breakwater", (-20.0, -40.0, 0.0), ((20.0, -40.0, 0.0),),
          "Starting 10 m west of the breakwater in the anchorage, the Otter goes round "
          "its north end to the far side.", current=(0.05, 0.0), max_sim_s=90.0),
    _ship("ship_narrows", (0.0, 0.0, 0.0), ((100.0, 0.0, 0.0),),
          "An island blocks the way east; the only passage is 20 m wide south of it "
          "(tests/scenarios/data/ship_narrows.geojson).", geofence="ship_narrows.geojson",
          current=(0.0, 0.1), max_sim_s=110.0),
    _ship("ship_gnss_glitch", (-135.0, 0.0, 0.0), ((-105.0, 0.0, 0.0),),
          "A GNSS outlier 20 m north at 5 s, towards moored ship A, is not followed.",
          faults=({"at": 5.0, "target": "ship1/gnss", "type": "glitch",
                   "offset": [0.0, 20.0, 0.0]},)),
    _ship("ship_gnss_dropout", (-135.0, 0.0, 0.0), ((-105.0, 0.0, 0.0),),
          "GNSS lost for 6 s: the estimate runs on speed log and heading, and the hull "
          "completes.", faults=({"at": 4.0, "for": 6.0, "target": "ship1/gnss",
                                 "type": "dropout"},)),
    _ship("ship_heading_delay", (-135.0, 0.0, 0.0), ((-105.0, 0.0, 0.0),),
          "The compass arrives 0.5 s late for 10 s.", seed=8,
          faults=({"at": 2.0, "for": 10.0, "target": "ship1/heading", "type": "delay",
                   "delay_s": 0.5},)),
    _ship("ship_link_loss", (-135.0, 0.0, 0.0), ((-105.0, 0.0, 0.0),),
          "The link drops for 2 s mid-crossing; the hull drifts on and completes.",
          faults=({"at": 5.0, "for": 2.0, "target": "ship1", "type": "link_loss"},)),
    _ship("ship_controller_crash", (-135.0, 0.0, 0.0), ((-105.0, 0.0, 0.0),),
          "The controller's process is killed (-9) at 5 s and restarted by the "
          "supervisor; the crossing completes.", crash_controller_at_s=5.0,
          max_sim_s=80.0),
]

CAR = [
    _car("car_south_road", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "A car drives 60 m east along the south road at town speed and completes.",
         slow=False),
    _car("car_left_turn", (50.0, -60.0, -PI / 2),
         ((50.0, -97.0, 0.0), (100.0, -100.0, 0.0)),
         "Down the west road and left into the south road, within the 20 m wide "
         "carriageways."),
    _car("car_near_road_edge", (60.0, -93.0, 0.0), ((130.0, -100.0, 0.0),),
         "Starting 3 m from the south road's edge, inside the planner's margin (5.4 m at "
         "6 m/s) but beyond the guard's (1.5 m): the route eases out to the middle instead "
         "of the start being refused."),
    _car("car_fast", (50.0, -100.0, 0.0), ((200.0, -100.0, 0.0),),
         "With a 7 m/s envelope (the planner's margin, radius + 3 sigma + stopping "
         "distance, is then 6.7 m of the road's 10 m half width) the car covers 150 m and "
         "stops at its goal inside the road.",
         node_params={"planner": {"envelope": {"max_speed_mps": 7.0}}}, max_sim_s=60.0),
    _car("car_toward_closed_street", (150.0, -60.0, PI / 2), ((150.0, 2.0, 0.0),),
         "North on the centre road to a goal 12 m short of the closed street: it stops "
         "there without touching the closure."),
    _car("car_lane_parked_van", (12.0, -3.0, 0.0), ((70.0, -3.0, 0.0), (100.0, -3.0, 0.0)),
         "A 14 m lane narrowed to 8 m by a parked van (tests/scenarios/data/"
         "car_lane.geojson), at 3 m/s: the planner's margin (2.7 m) leaves a 2.6 m band "
         "beside the van; the car threads it and drives on down the lane.",
         geofence="car_lane.geojson", max_sim_s=70.0,
         node_params={"planner": {"envelope": {"max_speed_mps": 3.0}}}),
    _car("car_wide_bend", (12.0, -3.0, 0.0), ((70.0, -3.0, 0.0), (98.0, 40.0, 0.0)),
         "Past the parked van, then a right-angle bend into a 24 m wide road "
         "(tests/scenarios/data/car_lane.geojson), taken as one arc of the car's 5 m turn "
         "radius.", geofence="car_lane.geojson", max_sim_s=70.0,
         node_params={"planner": {"envelope": {"max_speed_mps": 3.0}}}),
    _car("car_tight_bend", (12.0, -3.0, 0.0), ((70.0, -3.0, 0.0), (93.0, 40.0, 0.0)),
         "As car_wide_bend, but the bend is only 14 m wide "
         "(tests/scenarios/data/car_tight_bend.geojson): 8.6 m of it is free of the "
         "planner's margin, still room for the car's 5 m turn radius.",
         geofence="car_tight_bend.geojson", max_sim_s=70.0,
         node_params={"planner": {"envelope": {"max_speed_mps": 3.0}}}),
    _car("car_alley", (12.0, -3.0, 0.0), ((70.0, -3.0, 0.0), (89.0, 40.0, 0.0)),
         "The lane turns into a 6 m alley (tests/scenarios/data/car_alley.geojson): with "
         "the planner's 2.7 m margin off both sides the car's 5 m turn radius cannot make "
         "the bend, so the mission fails with that reason and the car holds in the lane.",
         geofence="car_alley.geojson", max_sim_s=40.0, expect="failed",
         expect_event="too tight for a turn radius",
         node_params={"planner": {"envelope": {"max_speed_mps": 3.0}}}),
    _car("car_gnss_glitch", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "A GNSS outlier 15 m north at 4 s (off the road) is not followed.", slow=False,
         faults=({"at": 4.0, "target": "car1/gnss", "type": "glitch",
                  "offset": [0.0, 15.0, 0.0]},)),
    _car("car_gnss_dropout", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "GNSS lost for 5 s: the estimate runs on wheel speed and IMU.",
         faults=({"at": 3.0, "for": 5.0, "target": "car1/gnss", "type": "dropout"},)),
    _car("car_wheel_speed_delay", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "Wheel speed arrives 0.3 s late for 8 s.", seed=9,
         faults=({"at": 2.0, "for": 8.0, "target": "car1/wheel_speed", "type": "delay",
                  "delay_s": 0.3},)),
    _car("car_link_loss", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "The link drops for 1.5 s while driving; the car completes.",
         faults=({"at": 5.0, "for": 1.5, "target": "car1", "type": "link_loss"},)),
    _car("car_controller_crash", (50.0, -100.0, 0.0), ((110.0, -100.0, 0.0),),
         "The controller's process is killed (-9) at 4 s and restarted by the "
         "supervisor; the drive completes.", crash_controller_at_s=4.0, max_sim_s=70.0),
    _car("car_mission_timeout", (50.0, -100.0, 0.0), ((200.0, -100.0, 0.0),),
         "A 6 s mission timeout on a 150 m drive: the mission ends 'failed' and the car "
         "holds inside the road.", timeout_s=6.0, expect="failed", max_sim_s=30.0,
         expect_event="not completed within 6 s"),
]

SCENARIOS: list[Scenario] = [*QUADROTOR, *VESSEL, *CAR]
