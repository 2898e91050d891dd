"""The built-in simulator (vehicles, sensors, clock) and the PX4/ArduPilot adapters."""
