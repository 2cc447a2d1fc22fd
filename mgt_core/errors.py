"""Errors users see. Each message names the file, key or value at fault and what was expected."""


class MGTError(Exception):
    """Base class: a problem with the user's input, not a bug in the pack."""


class MGTLoadError(MGTError):
    """A model file or folder cannot be used (missing, truncated, wrong keys or shapes)."""


class MGTInputError(MGTError, ValueError):
    """An argument is out of range or inconsistent (steps, sizes, masks, schedules...)."""


class MGTPromptWarning(UserWarning):
    """A prompt the text encoder will not read as written (truncated, or words a model never saw)."""
