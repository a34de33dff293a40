"""The errors that are the user's input: reported as one ``error: ...`` line, never a traceback.

A leaf module (no project imports), so every component can raise them without import cycles.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value or combination that cannot work. The message names the key and what is allowed."""


class LengthError(ValueError):
    """An encoding was asked for a position it cannot represent."""


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


# What the entry points turn into one line.
USER_ERRORS = (ConfigError, LengthError, NonFiniteLossError)
