"""The one exception type that reaches the user as a single line, never a traceback."""


class PrefrunError(ValueError):
    """A problem with the user's input: the message names the bad field or value and how to fix it."""
