"""User-facing errors.

A :class:`UserError` is bad input (a config key, a file, a value): the CLI prints its message as one line and exits
with status 2. Anything else escaping the CLI is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: one line that names the field or file and says the fix."""


class ConfigError(UserError):
    """A config key, type or value is not allowed."""


class DataError(UserError):
    """A dataset file or folder is missing or malformed."""
