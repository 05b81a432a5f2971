"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a `UserError` into a single line on stderr and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (arguments, config, data) with a message that names the fix."""

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        # Raised inside a DataLoader worker, the error reaches the main process re-created from a
        # text that embeds the worker's traceback: keep only the original one-line message.
        if isinstance(message, str) and "\nOriginal Traceback" in message:
            last = [line for line in message.splitlines() if line.strip()][-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message, *args)
