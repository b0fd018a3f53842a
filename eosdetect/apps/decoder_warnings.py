"""Decoder warnings that name the file, for as long as an application runs.

Pillow reports an odd file with a Python warning, tifffile with a log record; neither says
which file it is about, and a batch reads thousands. The library collects them per thread
while a file is read (:func:`eosdetect.io.named_warnings`) and logs each once as
``path: warning``, but only those handed to it: catching them means replacing
``warnings.showwarning`` and filtering tifffile's logger, process-wide changes that only an
application may make. :func:`routed_decoder_warnings` makes them for the block it guards (the
CLI's whole run) and undoes them after.

Images are decoded in several threads at once (the batch runner, the server), so the hooks
route by thread: a warning given where no file is being read is shown as it would have been.
(``warnings.catch_warnings`` is not used: it swaps process-wide state for every thread.)
"""

from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

from eosdetect.io import take_decoder_warning

#: The logger tifffile reports odd tags on.
TIFFFILE_LOGGER = "tifffile"


class _KeepDecoderRecords(logging.Filter):
    """On tifffile's logger: a warning logged while this thread reads a file goes to that file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not take_decoder_warning(record.getMessage())


def _routing(shown):
    """A ``warnings.showwarning`` that hands a warning to the file being read, else to ``shown``."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not take_decoder_warning(str(message)):
            shown(message, category, filename, lineno, file, line)

    return showwarning


class _Hooks:
    """The hooks in place, counted so that nested and concurrent blocks share one set."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.filter = _KeepDecoderRecords()
        self.shown = None  # the showwarning replaced
        self.routing = None  # ours

    def enter(self) -> None:
        with self.lock:
            self.depth += 1
            if self.depth == 1:
                self.shown = warnings.showwarning
                self.routing = warnings.showwarning = _routing(self.shown)
                logging.getLogger(TIFFFILE_LOGGER).addFilter(self.filter)

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                logging.getLogger(TIFFFILE_LOGGER).removeFilter(self.filter)
                if warnings.showwarning is self.routing:  # else replaced since: not ours to undo
                    warnings.showwarning = self.shown
                self.shown = self.routing = None


_HOOKS = _Hooks()


@contextmanager
def routed_decoder_warnings() -> Iterator[None]:
    """Route the decoders' warnings to the file being read, for the duration of the block.

    Inside it, a Pillow warning or a tifffile log record (WARNING and above) given in a thread
    that is reading a file (inside :func:`eosdetect.io.named_warnings`) is logged once as
    ``path: warning`` instead of being shown unnamed; any other is shown as usual. On leaving
    the outermost block ``warnings.showwarning`` and tifffile's logger are as they were.
    """
    _HOOKS.enter()
    try:
        yield
    finally:
        _HOOKS.exit()
