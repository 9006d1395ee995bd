"""The one exception type for a user's mistake (bad path, unknown name...).

Command-line entry points print its message on one line and exit non-zero,
without a traceback; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with what the user asked for, stated with what to do about it."""
