"""Exceptions for problems a user can fix (bad files, bad settings), and notices.

The CLI turns these into a one-line message and a non-zero exit code; anything
else is a bug and keeps its traceback.

A message says what is wrong. When changing one parameter of the call would
put it right, the error (or notice) names that parameter in ``option``
(``option="class_name"``); an application adds how its users set it (the CLI
its flag, ``--class``), the library never does.
"""

from __future__ import annotations

from dataclasses import dataclass


class EosdetectError(Exception):
    """Base class for errors caused by user input, not by a bug.

    Parameters
    ----------
    *args
        As for :class:`Exception`: the message first.
    option : str, optional
        The parameter of the call to change to put it right (``"class_name"``).
    """

    def __init__(self, *args, option: str | None = None):
        super().__init__(*args)
        self.option = option

    def __reduce__(self):
        """Pickle with ``option`` (a result sent back from a worker process keeps it)."""
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls, args, state):
    """An :class:`EosdetectError` from its pickled message and attributes (``__init__`` not run)."""
    exc = cls.__new__(cls, *args)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class InputError(EosdetectError, ValueError):
    """An input file or folder cannot be used (missing, unreadable, wrong kind).

    The message starts with the offending path so that it reads as
    ``path: problem``.
    """

    def __init__(self, path, problem, *, option: str | None = None):
        self.path = str(path)
        self.problem = str(problem)
        super().__init__(f"{self.path}: {self.problem}", option=option)


class ModelError(EosdetectError):
    """A model name or model folder cannot be used."""


class ConfigError(EosdetectError, ValueError):
    """A configuration file or value is invalid."""


class StorageError(EosdetectError):
    """Results cannot be written where they are asked for: a full disk, a quota, a
    read-only or vanished folder. Not a fault of the input, so a run stops at the first
    rather than recording it against every image that follows."""


@dataclass(frozen=True)
class Notice:
    """A warning the library hands back for the caller to show (not raised, not logged).

    ``text`` says what happened; ``option``, as for :class:`EosdetectError`,
    names the parameter behind it (``"verified_only"``), for an application
    to add how its users set it. ``str(notice)`` is the text.
    """

    text: str
    option: str | None = None

    def __str__(self) -> str:
        return self.text
