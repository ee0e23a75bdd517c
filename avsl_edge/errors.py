"""The one base class of every error a user can cause (bad input, bad usage, a missing or damaged
file, a device that is absent): each command prints its message and exits with 2, no traceback.
Anything else that escapes a command is a bug (exit 1, with its traceback)."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to fix; the CLIs map it to exit code 2."""


class OutputExistsError(UserError, FileExistsError):
    """An output that would replace something it must not (an input, another output, a foreign folder)."""
