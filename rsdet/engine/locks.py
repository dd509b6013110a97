"""One writer per run directory: an exclusive lock held for the whole run (docs/resume.md, "One writer").

``DirLock(run_dir).acquire()`` takes an exclusive POSIX record lock (``fcntl.lockf``) on
``run_dir/.lock`` without waiting, and writes the holder (pid, host, start time, command) into the
file for the process that is refused. The lock belongs to the process, so

- it is released by the kernel when the process ends in any way (``kill -9`` included): a crashed
  run never leaves a stale lock, and ``resume=true`` can take its folder at once;
- processes forked by the holder (DataLoader workers) do not hold it, so a killed run's workers
  that are still winding down do not block the resume;
- it works across hosts on NFS (lockd) and other network file systems that support POSIX locks.

The lock must be opened once per process and file: closing any descriptor of the lock file in the
holding process would drop its lock (a POSIX rule), which is why only this module opens it.

Where ``fcntl`` does not exist (Windows) there is no lock: a warning says so once, and only the
unique run-directory names keep two runs apart.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import sys
from pathlib import Path

from rsdet.errors import RsdetError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_WARNED = []
#: locks this process holds: resolved lock path -> [descriptor, number of DirLock objects holding it]
_HELD: dict[str, list[int]] = {}


class LockHeld(RsdetError):
    """Another live process writes this directory; ``holder`` is what it wrote about itself."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def read_holder(directory: Path) -> dict:
    """What the lock file of ``directory`` says about the process that holds (or last held) it."""
    try:
        data = json.loads((Path(directory) / LOCK_FILE).read_text(encoding="utf-8", errors="replace") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_holder(holder: dict) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int):
        return "another process (it has not written its pid yet)"
    text = f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")
    if holder.get("since"):
        text += f", since {holder['since']}"
    return text


class DirLock:
    """An exclusive, non-blocking lock on ``directory`` for this process (``what`` names it in messages)."""

    def __init__(self, directory: Path | str, what: str = "run"):
        self.directory = Path(directory)
        self.what = what
        self._fd: int | None = None
        self._key = ""

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        """Take the lock or raise ``LockHeld`` naming the holder; returns self."""
        if self._fd is not None:
            return self
        if fcntl is None:  # pragma: no cover - Windows
            if not _WARNED:
                log.warning("this platform has no POSIX file locks: nothing stops two processes from writing one "
                            "run directory (new runs still get unique directory names)")
                _WARNED.append(True)
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / LOCK_FILE
        key = str(path.resolve())
        if key in _HELD:  # this process holds it already (a second descriptor would drop it on close)
            _HELD[key][1] += 1
            self._fd, self._key = _HELD[key][0], key
            return self
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = read_holder(self.directory)
            raise LockHeld(f"{self.directory} is in use: the {self.what} there is being written by "
                           f"{describe_holder(holder)}. Only one process may write a {self.what}; wait for it to "
                           f"end or stop it (Ctrl-C or kill {holder.get('pid', '<pid>')}), then try again", holder) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:500]}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as exc:  # a full disk: the lock still holds, only the note is missing
            log.warning("could not note this process in %s (%s)", path, exc)
        self._fd, self._key = fd, key
        _HELD[key] = [fd, 1]
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        entry = _HELD.get(self._key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[self._key]
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - a lock dropped without release
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
