"""Message definitions, codec and the standard message set."""
