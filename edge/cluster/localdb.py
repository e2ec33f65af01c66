"""A throwaway PostgreSQL server of our own: for `edge demo --cluster`, the tests and the benchmarks.

Debian's server binaries (initdb, pg_ctl) on a fresh data directory, listening on 127.0.0.1 at a given port,
trusting local connections: never a production database. PostgreSQL refuses to run as root, so as root the
directory belongs to the `postgres` account (Debian's package creates it) and the binaries run as that account.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from edge.sdk.errors import EdgeError

__all__ = ["LocalPostgres", "PostgresMissing", "postgres_bindir"]

USER = "edge"  # the database superuser initdb creates
SERVICE_ACCOUNT = "postgres"


class PostgresMissing(EdgeError):
    """The PostgreSQL server binaries are not installed (Debian: postgresql)."""


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl are: the newest /usr/lib/postgresql/N/bin, else the PATH's."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise PostgresMissing("PostgreSQL's initdb was not found: install Debian's postgresql package")
    return Path(found).resolve().parent


class LocalPostgres:
    def __init__(self, port: int, workdir: Path | None = None) -> None:
        self.port = port
        self.bindir = postgres_bindir()
        self._account = pwd.getpwnam(SERVICE_ACCOUNT) if os.geteuid() == 0 else None
        # as root, a directory the service account can reach: pytest's and mkdtemp's parents are 0700 root
        base = workdir if workdir is not None and self._account is None else None
        self.root = base or Path(tempfile.mkdtemp(prefix="edge-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.dsn = f"postgresql://{USER}@127.0.0.1:{port}/postgres"

    def _run(self, *args: str) -> None:
        account = self._account
        result = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.root,
            check=False,
            user=None if account is None else account.pw_uid,
            group=None if account is None else account.pw_gid,
            extra_groups=None if account is None else [],
        )
        if result.returncode != 0:
            log_tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise EdgeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()} {log_tail}")

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._account is not None:
            os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast` (clients disconnected, clean) or `immediate` (as if it crashed)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
