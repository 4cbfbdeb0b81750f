"""The one exception type for mistakes a user can make; `main` turns it into one line and exit code 2."""


class UserError(Exception):
    """An error caused by input the user controls (config, files, paths), worded as one clear sentence."""
