"""Counting on this machine: an ordered thread pool.

Images are counted a few at a time in threads (reading, the networks, the
watershed and PNG encoding all release the GIL for most of their time), so
every core stays busy; at most ``2 * workers`` are in flight, so memory
stays bounded, and each is handed back in input order. A task that must run
alone (a whole slide: it needs the memory) waits for those before it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def default_workers() -> int:
    """Images counted at once: the CPU cores plus one (at most 4). On 2 cores, 3 threads
    count the 292 BCCD photos 1.5x faster than one (scripts/bench_folder.py)."""
    return max(1, min(4, (os.cpu_count() or 1) + 1))


def run_in_order(
    tasks: Iterable[tuple[Any, Callable[[], Any] | None, bool]],
    finish: Callable[[Any, Callable[[], Any] | None], None],
    *,
    workers: int,
    stop: threading.Event,
) -> None:
    """Run each task's work in a thread and hand the tasks back in input order.

    Parameters
    ----------
    tasks : iterable of (item, work, alone)
        ``work()`` runs in a thread (None: nothing to run); ``alone``: with no
        other task in flight. Read one at a time, as threads become free.
    finish : callable
        ``finish(item, outcome)``, in this thread and in input order;
        ``outcome()`` returns what ``work`` returned or raises what it raised
        (None for an item without work). An item whose ``finish`` was
        interrupted is finished again.
    workers : int
        Threads.
    stop : threading.Event
        Set when the run is interrupted (work in flight may watch it).

    On an interruption (Ctrl-C, or ``finish`` raising), the tasks not started
    are dropped, those running are waited for, the finished ones are handed
    back, and the exception goes on.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix="eosdetect-count")
    pending: deque = deque()  # (item, future or None), in input order

    def finish_next() -> None:
        # leave the item queued until it is finished: an interruption part-way through
        # (Ctrl-C while its outputs are being marked done) finishes it again below
        item, fut = pending[0]
        finish(item, None if fut is None else fut.result)
        pending.popleft()

    try:
        for item, work, alone in tasks:
            if work is None:
                pending.append((item, None))
            elif alone:
                while pending:
                    finish_next()
                pending.append((item, pool.submit(work)))
                finish_next()
            else:
                pending.append((item, pool.submit(work)))
            while pending and (len(pending) > 2 * workers or pending[0][1] is None or pending[0][1].done()):
                finish_next()
        while pending:
            finish_next()
    except BaseException:  # interrupted: keep what is finished already
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        _finish_done(pending, finish_next)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish_done(pending: deque, finish_next) -> None:
    """After an interruption: hand back the tasks at the head of the queue that are done."""
    while pending:
        fut = pending[0][1]
        if fut is not None and (fut.cancelled() or not fut.done()):
            break
        try:
            finish_next()
        except BaseException:  # noqa: BLE001 - already failing; a re-run redoes what is not marked done
            break
