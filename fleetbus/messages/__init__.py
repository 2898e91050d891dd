"""Message definitions, codec and the standard message set."""

from fleetbus.messages.base import Message, lookup_type, schema_hash, type_name
from fleetbus.messages.codec import Codec, DecodeError
from fleetbus.messages.commands import CarCommand, QuadrotorCommand, ShipCommand
from fleetbus.messages.geometry import Header, Pose, Quaternion, Twist, Vector3
from fleetbus.messages.navigation import (
    Corridor,
    CorridorCell,
    Geofence,
    GeofenceStatus,
    GeofenceZone,
    Mission,
    MissionCommand,
    MissionStatus,
    Odometry,
    Path,
    Waypoint,
)
from fleetbus.messages.sensors import BaroAltitude, GnssFix, Heading, Imu, SpeedLog, WheelSpeed
from fleetbus.messages.system import (
    ArrayMsg,
    Blob,
    Clock,
    Diagnostic,
    Event,
    Float64,
    Heartbeat,
    String,
)
from fleetbus.messages.vehicle import VehicleState

__all__ = [
    "ArrayMsg",
    "BaroAltitude",
    "Blob",
    "CarCommand",
    "Clock",
    "Codec",
    "Corridor",
    "CorridorCell",
    "DecodeError",
    "Diagnostic",
    "Event",
    "Float64",
    "Geofence",
    "GeofenceStatus",
    "GeofenceZone",
    "GnssFix",
    "Header",
    "Heading",
    "Heartbeat",
    "Imu",
    "Message",
    "Mission",
    "MissionCommand",
    "MissionStatus",
    "Odometry",
    "Path",
    "Pose",
    "QuadrotorCommand",
    "Quaternion",
    "ShipCommand",
    "SpeedLog",
    "String",
    "Twist",
    "Vector3",
    "VehicleState",
    "Waypoint",
    "WheelSpeed",
    "lookup_type",
    "schema_hash",
    "type_name",
]
