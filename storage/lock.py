"""The run-root lock: one pipeline run at a time on a run root (a local path or an object store URL).

The lock is a small JSON file created exclusively (``O_EXCL`` on a file system; a create-if-absent PUT on
object stores that support it) that names its holder (host, PID, since when) and carries a heartbeat the
holder rewrites every ``lease / 4`` seconds. A lock is abandoned when its holder's process is gone (same
host) or its heartbeat is older than ``lease`` (any host: a killed pod cannot say so); the next run takes it
over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from motionfit.storage import fs

logger = logging.getLogger(__name__)

LEASE_SECONDS = 120.0
"""A holder whose heartbeat is older than this is taken for dead (it rewrites it every 30 s)."""
WAIT_POLL_SECONDS = 5.0


class RunRootInUseError(BlockingIOError):
    """Another live run holds the run root's lock."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: ``host``, ``pid``, ``since`` (ISO time), ``heartbeat`` (epoch seconds), ``token``."""

    host: str
    pid: int
    since: str
    heartbeat: float
    token: str

    def describe(self, now: float) -> str:
        return (
            f"host {self.host}, PID {self.pid}, since {self.since} "
            f"(last heartbeat {now - self.heartbeat:.0f} s ago)"
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def abandoned(holder: Holder, now: float, lease: float) -> bool:
    """Whether ``holder`` is gone: its process ended (on this host), or its heartbeat is older than
    ``lease``."""
    if now - holder.heartbeat > lease:
        return True
    return holder.host == socket.gethostname() and not _pid_alive(holder.pid)


def read_holder(url: str) -> Holder | None:
    """The holder recorded in the lock file ``url``; ``None`` when there is none (or it is unreadable)."""
    try:
        return Holder(**fs.read_json(url))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # a torn or foreign file: treat as absent, it will be replaced
        logger.warning("run-root lock %s is unreadable; it is replaced", url)
        return None


def _create_exclusive(url: str, payload: bytes) -> bool:
    """Create ``url`` with ``payload`` unless it exists; False when it does."""
    filesystem, path = fs.resolve(url)
    filesystem.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    if filesystem.exists(path):  # stores whose "xb" is not exclusive: the read-back after creating decides
        return False
    try:
        with filesystem.open(path, "xb") as handle:
            handle.write(payload)
    except FileExistsError:
        return False
    return True


class RunRootLock:
    """The lock of one run root (``<root>/_lock.json``); :meth:`acquire`, then :meth:`release`."""

    def __init__(self, url: str, lease: float = LEASE_SECONDS) -> None:
        self.url = url
        self.lease = lease
        self.holder: Holder | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self, wait: bool = False) -> Holder:
        """Take the lock, replacing an abandoned one; raise :class:`RunRootInUseError` naming the holder when
        a live run has it (with ``wait``: poll until it is free)."""
        while True:
            now = time.time()
            mine = Holder(
                host=socket.gethostname(),
                pid=os.getpid(),
                since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                heartbeat=now,
                token=uuid.uuid4().hex,
            )
            if _create_exclusive(self.url, json.dumps(asdict(mine)).encode()):
                if (read_holder(self.url) or mine).token == mine.token:
                    self.holder = mine
                    self._start_heartbeat()
                    return mine
                continue
            current = read_holder(self.url)
            if current is None or abandoned(current, now, self.lease):
                self._remove_if(current)
                continue
            if not wait:
                raise RunRootInUseError(
                    f"the run root is in use by another run: {current.describe(now)}; wait for it "
                    f"(--wait), or, if that run is gone, its lock ({self.url}) is released once its "
                    f"heartbeat is {self.lease:.0f} s old"
                )
            logger.info("waiting for the run root's lock, held by %s", current.describe(now))
            time.sleep(WAIT_POLL_SECONDS)

    def _remove_if(self, expected: Holder | None) -> None:
        """Delete the lock file if it still holds ``expected`` (a second run may have replaced it)."""
        if read_holder(self.url) == expected:
            if expected is not None:
                logger.warning(
                    "taking over the abandoned run-root lock of %s", expected.describe(time.time())
                )
            try:
                fs.remove_file(self.url)
            except FileNotFoundError:
                pass

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(target=self._beat, name="run-root-lock", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            holder = self.holder
            if holder is None or (read_holder(self.url) or holder).token != holder.token:
                logger.error("the run-root lock %s was taken by another run", self.url)
                return
            self.holder = Holder(**{**asdict(holder), "heartbeat": time.time()})
            fs.write_json_atomic(self.url, asdict(self.holder))

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this holder's."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        holder, self.holder = self.holder, None
        current = read_holder(self.url)
        if holder is not None and current is not None and current.token == holder.token:
            fs.remove_file(self.url)


@contextmanager
def holding(url: str, wait: bool = False, lease: float = LEASE_SECONDS) -> Iterator[Holder]:
    """Hold the run-root lock ``url`` for the ``with`` block."""
    lock = RunRootLock(url, lease)
    holder = lock.acquire(wait)
    try:
        yield holder
    finally:
        lock.release()
