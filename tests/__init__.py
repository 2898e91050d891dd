"""Integration tests: real processes, real sockets (`python -m tests.procs ...`)."""
