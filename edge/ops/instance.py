"""One gateway per data directory: a second one would write the same outbox and break its ordering."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from edge.ops.files import private_dir
from edge.sdk.errors import EdgeError

LOCK_FILE = "gateway.lock"


class AlreadyRunning(EdgeError):
    pass


class InstanceLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        private_dir(self.path.parent)
        handle = open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+")  # noqa: SIM115 - held while running
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"another gateway (pid {holder}) is running on {self.path.parent}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
