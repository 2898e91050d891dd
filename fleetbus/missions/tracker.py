"""Where a vehicle stands on its mission: the waypoint it is going to, when one is reached,
and when the mission is complete. Pure logic over positions, speeds and estimate stamps,
so it is tested without a bus and gives the same answer when a run is replayed.

- A waypoint is reached within its acceptance radius: horizontally for surface vehicles,
  in 3-D for drones.
- A pass-through waypoint (no hold, not the last goal) also counts once the vehicle has
  passed it, i.e. crossed the plane through it square to the leg leading there (as
  ArduPilot does): the planner rounds corners to the vehicle's turn radius, so a car may
  never come within a tight radius of a corner, and the mission must not stall there.
- A waypoint with `hold_s` is done once the vehicle has stayed within its radius that
  long, by the estimates' stamps; leaving the radius starts the hold again.
- The mission is complete when the vehicle is within the radius of its last goal (home,
  with `return_home`), has held there, and moves slower than `stop_speed_mps`: at rest
  at the goal, so a vehicle that brakes to a stop outside the radius has not completed
  it (a mission timeout in the node catches one that never does).

The planner brings a vehicle to rest only at the end of the path it is given, so a hold
needs a path that ends there: `leg()` is the part of the mission to plan now, up to the
next waypoint with a hold (or the end), and `Step.new_leg` says when the next one is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fleetbus.messages import Mission, Vector3, Waypoint

STOP_SPEED_MPS = 0.2  # slower than this counts as stopped at the last goal


@dataclass(frozen=True)
class Step:
    """What one update found."""

    arrived: tuple[int, ...] = ()  # goals reached for the first time, in order
    new_leg: bool = False  # a hold is over: the next leg must go to the planner
    completed: bool = False  # the mission has just been completed


class MissionTracker:
    """Progress along `mission`'s goals: its waypoints, then home if it returns there."""

    def __init__(self, mission: Mission, home: Sequence[float] | None = None,
                 three_d: bool = False, stop_speed_mps: float = STOP_SPEED_MPS) -> None:
        goals = list(mission.waypoints)
        if not goals:
            raise ValueError(f"mission {mission.mission_id!r} has no waypoints")
        if mission.return_home:
            if home is None:
                raise ValueError(f"mission {mission.mission_id!r} returns home: it needs "
                                 f"the home position")
            x, y, z = (float(v) for v in home)
            goals.append(Waypoint(position=Vector3(x=x, y=y, z=z),
                                  speed_mps=goals[-1].speed_mps,
                                  acceptance_radius_m=goals[-1].acceptance_radius_m))
        self.mission = mission
        self.goals = goals
        self.waypoints = len(mission.waypoints)  # the way home not counted
        self.index = 0  # the goal being approached; len(goals) once completed
        self.stop_speed_mps = stop_speed_mps
        self._dims = 3 if three_d else 2
        self._points = np.array([[w.position.x, w.position.y, w.position.z]
                                 for w in goals])[:, :self._dims]
        self._leg_start = 0  # the first goal of the current leg
        self._from: np.ndarray | None = None  # where the current leg began
        self._since: float | None = None  # stamp the vehicle entered the goal's radius
        self._announced = -1  # the last goal reported as arrived

    @property
    def completed(self) -> bool:
        return self.index >= len(self.goals)

    @property
    def returning(self) -> bool:
        """On the way home: every waypoint done, the mission not complete."""
        return self.waypoints <= self.index < len(self.goals)

    @property
    def target(self) -> Waypoint:
        """The goal being approached, or the last one once complete."""
        return self.goals[min(self.index, len(self.goals) - 1)]

    def leg(self) -> list[Waypoint]:
        """The goals to plan now: from the next one to the next with a hold, or the end."""
        last = len(self.goals) - 1
        end = next(k for k in range(self.index, last + 1)
                   if self.goals[k].hold_s > 0 or k == last)
        return self.goals[self.index:end + 1]

    def restart(self, position: Sequence[float]) -> None:
        """A new leg begins at `position`: the mission starts, or resumes after a hold,
        a failsafe or an operator's order."""
        self._from = self._point(position)
        self._leg_start = self.index
        self._since = None

    def distance(self, position: Sequence[float]) -> float:
        """Horizontal distance to the target, m (what MissionStatus reports)."""
        p = self.target.position
        return float(np.hypot(p.x - position[0], p.y - position[1]))

    def update(self, position: Sequence[float], speed_mps: float, stamp_s: float) -> Step:
        """Advance with an estimate: its position (ENU, m), speed (m/s) and stamp (s)."""
        p = self._point(position)
        arrived: list[int] = []
        new_leg, was_completed = False, self.completed
        while not self.completed:
            k, goal = self.index, self.goals[self.index]
            last = k == len(self.goals) - 1
            inside = float(np.linalg.norm(p - self._points[k])) <= goal.acceptance_radius_m
            if not (inside or (goal.hold_s == 0 and not last and self._passed(p, k))):
                self._since = None
                break
            if k > self._announced:
                arrived.append(k)
                self._announced = k
            if self._since is None:
                self._since = stamp_s
            if stamp_s - self._since < goal.hold_s or (last and speed_mps >= self.stop_speed_mps):
                break
            self.index += 1
            self._since = None
            if goal.hold_s > 0 and not self.completed:
                new_leg = True
                self.restart(position)
        return Step(tuple(arrived), new_leg, self.completed and not was_completed)

    # -- helpers ----------------------------------------------------------------------------

    def _point(self, position: Sequence[float]) -> np.ndarray:
        return np.asarray(position, float)[:self._dims]

    def _passed(self, p: np.ndarray, k: int) -> bool:
        """Whether `p` is beyond the plane through goal k square to the leg leading there."""
        before = self._points[k - 1] if k > self._leg_start else self._from
        if before is None:
            return False
        return float(np.dot(p - self._points[k], self._points[k] - before)) > 0.0
