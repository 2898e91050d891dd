"""Vehicle control. Pure library: the controller and guard nodes put it on the bus."""

from fleetbus.control.safety import SafeAction, SafetyGains, safe_command

__all__ = ["SafeAction", "SafetyGains", "safe_command"]
