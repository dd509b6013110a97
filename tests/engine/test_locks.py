"""One writer per run directory: the lock is exclusive between processes, names its holder, is freed
by the kernel when the holder dies (kill -9 included) and is not held by the holder's forked children."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsdet.engine.locks import DirLock, LockHeld, read_holder

REPO = Path(__file__).resolve().parents[2]

# Takes the lock of argv[1], optionally forks a child that keeps running, says so, then waits.
HOLDER = """
import os, sys, time
from rsdet.engine.locks import DirLock
lock = DirLock(sys.argv[1]).acquire()
if sys.argv[2] == "fork" and os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("held", flush=True)
time.sleep(60)
"""


def _hold(folder: Path, fork: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "fork" if fork else "-"], env=env,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid_until_the_holder_is_killed(tmp_path):
    holder = _hold(tmp_path, fork=True)  # the forked child stands for a DataLoader worker
    try:
        with pytest.raises(LockHeld) as info:
            DirLock(tmp_path).acquire()
        assert f"pid {holder.pid}" in str(info.value) and read_holder(tmp_path)["pid"] == holder.pid
        holder.send_signal(signal.SIGKILL)  # the holder's child lives on
        holder.wait(10)
        deadline = time.monotonic() + 5
        while True:  # the kernel frees the lock as the holder dies, whatever its children do
            try:
                lock = DirLock(tmp_path).acquire()
                break
            except LockHeld:
                assert time.monotonic() < deadline, "the lock outlived its holder"
                time.sleep(0.05)
        assert read_holder(tmp_path)["pid"] == os.getpid()
        lock.release()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


def test_one_process_may_take_its_own_lock_twice(tmp_path):
    first = DirLock(tmp_path).acquire()
    second = DirLock(tmp_path).acquire()  # e.g. a sweep resume and one of its jobs: not a conflict
    second.release()
    assert first.held
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        probe = subprocess.run([sys.executable, "-c", "import sys; from rsdet.engine.locks import DirLock, LockHeld\n"
                                "try:\n    DirLock(sys.argv[1]).acquire()\nexcept LockHeld:\n    sys.exit(3)",
                                str(tmp_path)], env=env)
        assert probe.returncode == 3  # releasing the second handle kept the first one's lock
    finally:
        first.release()
