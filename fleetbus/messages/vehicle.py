"""Ground truth from the simulator."""

from __future__ import annotations

from typing import Literal

import msgspec

from fleetbus.messages.base import Message
from fleetbus.messages.geometry import Header, Pose, Twist, Vector3


class VehicleState(Message):
    """True state of a simulated vehicle: pose and linear velocity in the world frame
    (ENU), angular velocity in the body frame (FLU)."""

    __msgtype__ = "fleetbus/VehicleState"
    header: Header = msgspec.field(default_factory=Header)
    vehicle_id: str = ""  # unique name of the vehicle in the simulation
    vehicle_type: Literal["quadrotor", "vessel", "car"] = "quadrotor"
    pose: Pose = msgspec.field(default_factory=Pose)  # m, body → ENU
    twist: Twist = msgspec.field(default_factory=Twist)  # linear m/s ENU, angular rad/s FLU
    acceleration: Vector3 = msgspec.field(default_factory=Vector3)  # world frame, m/s²
