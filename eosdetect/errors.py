"""Exceptions for problems a user can fix (bad files, bad settings).

The CLI turns these into a one-line message and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""


class EosdetectError(Exception):
    """Base class for errors caused by user input, not by a bug."""


class InputError(EosdetectError, ValueError):
    """An input file or folder cannot be used (missing, unreadable, wrong kind).

    The message starts with the offending path so that it reads as
    ``path: problem``.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}")


class ModelError(EosdetectError):
    """A model name or model folder cannot be used."""


class ConfigError(EosdetectError, ValueError):
    """A configuration file or value is invalid."""
