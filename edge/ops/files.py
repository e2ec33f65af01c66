"""Private files of the data directory: the directory 0700, every file 0600, whatever the umask.

The data directory holds the outbox (with the webhook secrets), the identity key and the broker's users, so
nothing in it is for other local users. `edge` sets the umask to 077 at its entry (edge.cli.main); these
helpers make the same true for the kernel's databases when it runs inside another program (tests, embedding).
SQLite gives a database's -wal and -shm files the database file's mode, so creating the database 0600 before
SQLite opens it covers them too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["private_database", "private_dir"]


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) 0700; an existing directory keeps its mode."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def private_database(path: Path) -> Path:
    """Create an empty database file 0600 (an empty file is an empty SQLite database) unless it exists."""
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return path
