"""fleetbus: event-driven autonomy middleware for drones, ships and ground vehicles."""

__version__ = "0.1.0"
