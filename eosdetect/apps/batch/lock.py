"""One run at a time in an output folder: the folder lock of ``eosdetect count``.

Two runs writing one folder would mix their results (one run's settings in
``counts.csv``, the other's files beside them). A run holds
``OUT_DIR/.eosdetect/lock`` while it writes; a second run refuses at once,
in one line naming the run that holds it (process id, machine, command,
when it started), and writes nothing.

How the holder is known
-----------------------
The lock file is locked with ``flock`` while its run lasts, and holds the
run's description. The operating system drops a ``flock`` when its process
ends, however it ends (a crash, ``kill -9``, a power cut of the client), so a
lock left by a run that is gone is taken over without asking.

Network file systems
--------------------
NFS (v4, or v3 with its lock manager) shares ``flock`` between machines; some
mounts (``nolock``, ``local_lock=all``, many SMB set-ups) keep locks on each
machine only. To be safe there too, the holder also touches the lock file
every :data:`HEARTBEAT_S` seconds: a lock written by *another machine* is
respected while it was touched in the last :data:`STALE_AFTER_S` seconds,
even when ``flock`` says it is free. A lock from another machine that has
not been touched for that long is taken to be left by a run that is gone
(its machine stopped); the refusal says so, and when it may be taken over.
On one machine ``flock`` always decides (it is local there in every case).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from eosdetect.errors import EosdetectError

try:
    import fcntl
except ImportError:  # Windows: the heartbeat alone tells a live holder
    fcntl = None

#: How often a run touches its lock file (seconds).
HEARTBEAT_S = 20.0
#: A lock from another machine untouched this long was left by a run that is gone (seconds).
STALE_AFTER_S = 120.0


class FolderBusy(EosdetectError):
    """Another run is writing to the output folder."""


class FolderLock:
    """Hold an output folder's lock for a ``with`` block.

    Parameters
    ----------
    folder : path
        The output folder, named in the refusal.
    lock_path : path
        The lock file (created when missing).

    Raises
    ------
    FolderBusy
        On entering, when another run holds the folder.
    """

    def __init__(self, folder: str | os.PathLike, lock_path: str | os.PathLike):
        self.folder = Path(folder)
        self.path = Path(lock_path)
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ taking it
    def acquire(self) -> None:
        """Take the lock, or raise :class:`FolderBusy` naming its holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_flock(fd):
                raise FolderBusy(self._busy_message(_read_holder(fd)))
            holder = _read_holder(fd)
            if _remote_and_alive(holder, self.path):
                raise FolderBusy(self._busy_message(holder) + f" (a lock from another machine is taken over once "
                                 f"it has not been renewed for {STALE_AFTER_S:g} s)")
            try:
                _write_holder(fd, _this_run())
            except OSError:  # a full disk: the flock holds the folder on this machine all the same
                pass
        except BaseException:
            os.close(fd)  # drops the flock too
            raise
        self._fd = fd
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="eosdetect-lock", daemon=True)
        self._beat.start()

    def release(self) -> None:
        """Let the folder go (the lock file stays, marked released)."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            _write_holder(self._fd, {})
        except OSError:  # a full disk: the flock, dropped below, is what counts on this machine
            pass
        os.close(self._fd)
        self._fd = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _busy_message(self, holder: dict) -> str:
        who = describe(holder) if holder else "another eosdetect run"
        return (f"{self.folder}: {who} is writing to this folder; wait for it to finish, or count into "
                "another --out-dir")


def describe(holder: dict) -> str:
    """A lock holder in words: ``eosdetect run 1234 on lab-pc (eosdetect count imgs), started 09:12:03``."""
    started = holder.get("started")
    when = datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S") if isinstance(started, (int, float)) else "?"
    return (f"eosdetect run {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"({holder.get('command', '?')}), started {when},")


def _try_flock(fd: int) -> bool:
    """Whether this process now holds ``fd``'s exclusive flock (False: another process does)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock at all: the heartbeat decides
        return True
    return True


def _remote_and_alive(holder: dict, path: Path) -> bool:
    """A holder on another machine whose heartbeat is recent: it may be running where our flock
    cannot see it (a network file system whose locks are local to each machine)."""
    if not holder or holder.get("host") == socket.gethostname():
        return False
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    return age < STALE_AFTER_S


def _this_run() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
            "command": " ".join(["eosdetect", *sys.argv[1:]])[:200]}


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        holder = json.loads(data.decode("utf-8", "replace")) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(fd: int, holder: dict) -> None:
    data = (json.dumps(holder) + "\n").encode("utf-8") if holder else b""
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    if data:
        os.write(fd, data)
