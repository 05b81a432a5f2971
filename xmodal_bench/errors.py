"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a `UserError` into a single line on stderr and exit status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (arguments, config, data) with a message that names the fix."""

    exit_code = 2
