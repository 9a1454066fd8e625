"""User-facing errors: bad scenarios, traces, flags and profiles.

Anything the user can fix raises a ``ServesimError`` whose message is one line naming the
field (or file and row) and what is allowed. The CLI prints it and exits with code 2; no
traceback reaches the user.
"""

from __future__ import annotations


class ServesimError(Exception):
    """A problem with the user's input, reported as one line."""


class ConfigError(ServesimError):
    """A scenario field is missing, unknown, of the wrong type or out of range."""


class TraceError(ServesimError):
    """A trace file cannot be read or holds a value that is not allowed."""


class CapacityError(ServesimError):
    """A model does not fit the GPU it was given (weights + reserve > memory)."""
