"""A private PostgreSQL server for the tests and `edge bench`: Debian's binaries (initdb, pg_ctl), a data directory
in a temporary folder, 127.0.0.1 on a free port, password authentication over TCP. Never the machine's own
service, so both work on a fresh Debian machine where scripts/setup.sh installed the postgresql package."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from bench.procs import free_port

SUPERUSER = "edge"


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True) or [shutil.which(name) or ""]
    if not found[0]:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package (scripts/setup.sh)")
    return found[0]


class PostgresServer:
    """initdb + pg_ctl as an unprivileged user when the tests run as root (initdb refuses root)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self._as: list[str] = []
        workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # pytest's temporary folders are private to root: the server's user could not reach a folder there
            self._as = ["runuser", "-u", "postgres", "--"]
            workdir = Path(tempfile.mkdtemp(prefix="edge-pg-"))
            shutil.chown(workdir, "postgres")
        self.workdir = workdir
        self.data = workdir / "pgdata"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, timeout=120, check=False)
        if done.returncode:
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )

    def start(self) -> None:
        pwfile = self.workdir / "pw"
        pwfile.write_text(self.password)
        if self._as:
            shutil.chown(pwfile, "postgres")
        self._run(
            _binary("initdb"), "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.workdir}"
            " -c max_connections=200 -c fsync=on -c logging_collector=off"
        )
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.workdir / "log"),
                  "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError):
            self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        if self._as:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self) -> None:
        # -l: without a log file the new postmaster keeps the captured stdout open and the run never returns
        self._run(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.workdir / "log"),
            "-w",
            "-t",
            "60",
            "restart",
        )

    def pids(self) -> list[int]:
        """The server's processes (postmaster and every backend): what it costs in CPU (`edge bench`)."""
        import psutil

        try:
            postmaster = psutil.Process(int((self.data / "postmaster.pid").read_text().split()[0]))
            return [postmaster.pid, *(c.pid for c in postmaster.children())]
        except (OSError, ValueError, psutil.Error):
            return []

    def dsn(self, dbname: str = "postgres") -> str:
        """A DSN without the password (the gateway reads it from a secret reference)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new database; returns its DSN."""
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.dsn(), password=self.password, autocommit=True) as db:
            db.execute(statement)
