"""Recordings of the bus in MCAP: the recorder node, the player and the replay check."""
