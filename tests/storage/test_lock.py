"""The run-root lock: a second run is refused naming the holder; an abandoned lock is taken over."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from motionfit.storage import lock
from motionfit.storage.lock import RunRootInUseError, RunRootLock, holding, read_holder


def test_a_second_holder_is_refused_with_the_holders_name(tmp_path: Path) -> None:
    url = str(tmp_path / "_lock.json")
    with holding(url) as first:
        assert read_holder(url) == first and first.host == socket.gethostname()
        named = re.escape(f"host {first.host}, PID {first.pid}, since {first.since}")
        with pytest.raises(RunRootInUseError, match=named):
            RunRootLock(url).acquire()
    assert not Path(url).exists(), "released"
    with holding(url) as again:
        assert again.token != first.token


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    url = str(tmp_path / "_lock.json")
    script = f"import os, motionfit.storage.lock as lock\nlock.RunRootLock({url!r}).acquire()\nos._exit(0)"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    dead = read_holder(url)
    assert dead is not None, "the dead process left its lock behind"
    with holding(url) as mine:
        assert mine.token != dead.token and read_holder(url) == mine


def test_a_stale_heartbeat_from_another_host_is_taken_over(tmp_path: Path) -> None:
    url = tmp_path / "_lock.json"
    fresh = {"host": "pod-7", "pid": 1, "since": "2026-01-01T00:00:00+00:00", "token": "x"}
    url.write_text(json.dumps({**fresh, "heartbeat": time.time() - 10}))
    with pytest.raises(RunRootInUseError, match="host pod-7, PID 1"):
        RunRootLock(str(url), lease=60).acquire()
    url.write_text(json.dumps({**fresh, "heartbeat": time.time() - 61}))
    with holding(str(url), lease=60) as mine:
        assert mine.host == socket.gethostname()


def test_the_heartbeat_keeps_a_long_run_alive_and_wait_waits(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(lock, "WAIT_POLL_SECONDS", 0.05)
    url = str(tmp_path / "_lock.json")
    held = RunRootLock(url, lease=0.4)
    first = held.acquire()
    time.sleep(0.6)  # longer than the lease: only the heartbeat keeps the lock
    with pytest.raises(RunRootInUseError):
        RunRootLock(url, lease=0.4).acquire()
    assert read_holder(url).heartbeat > first.heartbeat
    threading.Timer(0.3, held.release).start()
    with holding(url, wait=True, lease=0.4) as waited:
        assert waited.token != first.token
