"""A per-artifact build lock that holds on a shared file system (NFS, Lustre) across hosts.

``fcntl`` locks are advisory, per host on many NFS set-ups and lost silently when a lock daemon
restarts, so the lock is a file: made by hard-linking a private file onto the lock's name (atomic on
NFS, unlike ``O_EXCL`` on old clients; the private file's link count says who won), carrying the
holder's host, PID and a token. A thread refreshes its mtime (the heartbeat) while the holder
builds. A waiter takes the lock over when its holder is a dead process of this host, or when the
heartbeat has not moved for ``stale_after`` seconds of the waiter's own clock (no comparison of
clocks across hosts). Taking over renames the stale file away (atomic: one waiter wins) and checks
that what it moved is the file it judged stale, putting back a live one it raced with.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Self

#: seconds between heartbeats, and without one before a lock counts as abandoned (above NFS's
#: attribute cache, 60 s at most by default); the environment overrides them (tests, odd file systems)
HEARTBEAT = float(os.environ.get("RELAXKD_LOCK_HEARTBEAT", "10"))
STALE_AFTER = float(os.environ.get("RELAXKD_LOCK_STALE_AFTER", "120"))
POLL = 0.5


class BuildLock:
    """``with BuildLock(path): ...`` holds ``path`` exclusively, waiting for (or taking over from) another holder."""

    def __init__(self, path: Path, on_wait: Callable[[str], None] | None = None,
                 heartbeat: float | None = None, stale_after: float | None = None):
        self.path = Path(path)
        self.on_wait = on_wait
        self.heartbeat = HEARTBEAT if heartbeat is None else heartbeat
        self.stale_after = STALE_AFTER if stale_after is None else stale_after
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking it -------------------------------------------------------------------------------
    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        seen: tuple[float, str] | None = None  # (heartbeat, holder token) last observed
        since = time.monotonic()
        told = False
        while not self._try_create():
            holder = read_holder(self.path)
            if holder is None:  # released between our attempt and the read
                continue
            beat = (holder["mtime"], holder.get("token", ""))
            if beat != seen:
                seen, since = beat, time.monotonic()
            dead_here = holder.get("host") == socket.gethostname() and not pid_alive(holder.get("pid", -1))
            if dead_here or time.monotonic() - since > self.stale_after:
                self._take_over(holder.get("token", ""))
                continue
            if not told and self.on_wait is not None:
                self.on_wait(f"being built by {holder.get('host')} pid {holder.get('pid')}; waiting for it ({self.path})")
                told = True
            time.sleep(POLL)
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()

    def _try_create(self) -> bool:
        private = self.path.with_name(f"{self.path.name}.{self.token}")
        private.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                                       "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        try:
            os.link(private, self.path)
        except FileExistsError:
            pass
        except OSError:  # no hard links on this file system: exclusive create instead
            with contextlib.suppress(FileExistsError):
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, private.read_bytes())
                os.close(fd)
        try:  # link count 2, or our token in the lock file, means the lock is ours (NFS may lose the reply)
            ours = os.stat(private).st_nlink == 2 or (read_holder(self.path) or {}).get("token") == self.token
        finally:
            private.unlink(missing_ok=True)
        return ours

    def _take_over(self, stale_token: str) -> None:
        moved = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:  # another waiter took it over first
            return
        holder = read_holder(moved) or {}
        if holder.get("token") != stale_token:  # raced: we moved a live lock; put it back
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
        moved.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    # -- giving it back --------------------------------------------------------------------------
    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (read_holder(self.path) or {}).get("token") == self.token:  # never remove a lock taken over from us
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def read_holder(path: Path) -> dict | None:
    """The lock file's contents and mtime, or None when there is no lock."""
    try:
        mtime = os.stat(path).st_mtime
        holder = json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # half-written by an exclusive create: a lock without a known holder
        return {"mtime": 0.0}
    return {**holder, "mtime": mtime} if isinstance(holder, dict) else {"mtime": mtime}


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` of this host may still run (an unknown or foreign PID counts as alive)."""
    if not isinstance(pid, int) or pid <= 0:  # unknown holder: only its heartbeat can tell
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # exists, owned by another user; or no such PID can exist
        return True
    return True
