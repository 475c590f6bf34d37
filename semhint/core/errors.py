"""The two kinds of user mistake semhint reports as one clear line (and exit status 2) instead of a traceback.

Both name the file or config key at fault and the problem. Everything else that goes wrong is a
bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (missing file, corrupt image, malformed split line...): one clear line."""


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source and the key."""


class SemhintWarning(UserWarning):
    """Something the user should know before trusting a result (a run that cannot learn depth, a guessed
    camera): the command line prints it as one line, ``semhint: warning: ...``."""
