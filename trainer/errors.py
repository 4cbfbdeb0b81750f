"""The one exception type for mistakes a user can make; `main` turns it into one line and exit code 2."""

import sys


class UserError(Exception):
    """An error caused by input the user controls (config, files, paths), worded as one clear sentence."""


def fail(message: object, code: int = 2) -> int:
    """Say what went wrong as every command here says it, one `error:` line on stderr, and return the exit code."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code
