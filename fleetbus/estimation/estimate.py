"""What every filter reports, in the frames of fleetbus.messages.Odometry."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Estimate:
    stamp_s: float
    position: np.ndarray  # ENU, m
    orientation: np.ndarray  # quaternion (w, x, y, z), body → ENU
    velocity_body: np.ndarray  # over ground, body FLU, m/s
    angular_body: np.ndarray  # body FLU, rad/s
    pose_covariance: np.ndarray  # 6x6 over x, y, z, roll, pitch, yaw
    twist_covariance: np.ndarray  # 6x6 over the body velocities and rates


def wrap(angle: float | np.ndarray) -> float | np.ndarray:
    """An angle in [-pi, pi)."""
    return (np.asarray(angle) + math.pi) % math.tau - math.pi


def yaw_quaternion(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def planar_covariances(P: np.ndarray, position: list[int], yaw: int,
                       velocity: list[int], rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Pose and twist covariances (6x6) of a planar filter from its P and the indices of
    its position (x, y), yaw, body velocity and yaw rate states. The unobserved axes get
    a large variance rather than a false certainty."""
    big = 1e6
    pose, twist = np.diag([0, 0, big, big, big, 0.0]), np.diag([0, 0, big, big, big, 0.0])
    for block, rows, cols in ((pose, [0, 1, 5], [*position, yaw]),
                              (twist, [*range(len(velocity)), 5], [*velocity, rate])):
        block[np.ix_(rows, rows)] = P[np.ix_(cols, cols)]
    if len(velocity) == 1:
        twist[1, 1] = 1e-4  # the kinematic car does not slide sideways
    return pose, twist


def reset_rows(P: np.ndarray, rows: list[int], R: np.ndarray) -> None:
    """Forget what P knew about these states (and their correlations): they were just
    set from a measurement of covariance R."""
    P[rows, :] = 0.0
    P[:, rows] = 0.0
    P[np.ix_(rows, rows)] = R
