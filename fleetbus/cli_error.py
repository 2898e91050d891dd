"""The CLI's user-facing failure, in a module of its own: `python -m fleetbus.cli` runs the
CLI as __main__, so the subcommands defined elsewhere cannot import the class from it."""


class CliError(Exception):
    """A user-facing failure: printed without a traceback, exit status 2."""
