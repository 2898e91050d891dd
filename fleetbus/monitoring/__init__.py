"""Watching a running bus from outside tools: the Foxglove bridge."""
