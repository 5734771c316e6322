"""User-facing errors.

A :class:`UserError` is bad input (a config key, a file, a value): the CLI prints its message as one line and exits
with status 2. Anything else escaping the CLI is a bug and keeps its traceback.
"""

import re
from typing import Mapping

MAX_SHOWN_CHARS = 200  # a user's text (a name, a path, a value) echoed in a message is cut to this many characters
MAX_LINE_CHARS = 2000  # and a whole error line to this many


class UserError(Exception):
    """Bad input from the user: one line that names the field or file and says the fix.

    A library function names its own parameters in the message (``gpus must be at least 1``) and lists them in
    ``params``; the command line says its flags instead (``--gpus must be at least 1``: :meth:`reworded`, called by
    :func:`robustscale.cli.main`).
    """

    def __init__(self, message: object = "", *params: str):
        super().__init__(message)
        self.params = params

    def reworded(self, flags: Mapping[str, str]) -> str:
        """The message with each parameter name in ``params`` replaced by ``flags[name]`` (as a whole word; names
        without a flag are kept)."""
        text = str(self)
        for name in sorted(self.params, key=len, reverse=True):
            if name in flags:
                text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", lambda _: flags[name], text)
        return text


class ConfigError(UserError):
    """A config key, type or value is not allowed."""


class DataError(UserError):
    """A dataset file or folder is missing or malformed."""


class ParameterError(UserError, ValueError):
    """A bad argument to a library function, naming the parameter (``ParameterError(message, "gpus")``). Also a
    :class:`ValueError`, as a bad argument is to any Python code."""


def shown(text: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` as it may appear inside a one-line message: control characters (NUL, line breaks, escapes) written
    as ``\\x00``-style escapes, and anything longer than ``limit`` cut, saying how long it was. A 200k-character name
    or a raw NUL byte from a crafted file then cannot flood or corrupt a terminal."""
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
    if len(text) > limit:
        return f"{text[:limit]}... ({len(text)} characters)"
    return text


def one_line(message: object) -> str:
    """A whole error message as one printable line (the CLI's last guard before printing it)."""
    return shown(" ".join(str(message).split()), MAX_LINE_CHARS)
