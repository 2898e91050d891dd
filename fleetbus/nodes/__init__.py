"""Ready-made nodes that wrap the fleetbus libraries for use in graphs."""
