"""What the downlink must remember across restarts, in `{data_dir}/downlink.db` (SQLite, WAL, FULL sync).

- `seen`: every message id (`jti`) per tenant with its not-after time, recorded *before* the message is acted
  on, so a replay is refused even after a restart, and a crash mid-command never runs it twice. An id is
  forgotten only once its message has expired (an expired message is refused anyway).
- `cursor`: per tenant, the last downlink position handled; the next poll acknowledges it to the platform.
- `entitlements`: per tenant, the platform's last answer and when it came, so offline the last answer holds
  (and `edge status` shows its age).
Statements are short; the gateway calls them from its loop (a few per message, not on the telemetry path).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FILE", "DownlinkLedger", "EntitlementAnswer", "read_entitlement_answers"]

FILE = "downlink.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    tenant TEXT NOT NULL, jti TEXT NOT NULL, exp REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (tenant, jti)
);
CREATE TABLE IF NOT EXISTS cursor (tenant TEXT PRIMARY KEY, after INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entitlements (
    tenant TEXT PRIMARY KEY, flags TEXT NOT NULL, fetched REAL NOT NULL, jti TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class EntitlementAnswer:
    flags: tuple[str, ...]
    fetched: float  # wall time the platform's answer arrived

    def age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.fetched


class DownlinkLedger:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        data_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def first_sight(self, tenant: str, jti: str, exp: float) -> float | None:
        """Record an id as seen; returns None the first time, else when it was first seen (a replay)."""
        now = time.time()
        row = self._db.execute("SELECT at FROM seen WHERE tenant = ? AND jti = ?", (tenant, jti)).fetchone()
        if row is not None:
            return float(row[0])
        self._db.execute("INSERT INTO seen VALUES (?, ?, ?, ?)", (tenant, jti, exp, now))
        return None

    def forget_expired(self, before: float) -> int:
        """Drop ids whose messages expired before `before` (they are refused as expired from then on)."""
        return self._db.execute("DELETE FROM seen WHERE exp < ?", (before,)).rowcount

    def cursor(self, tenant: str) -> int:
        row = self._db.execute("SELECT after FROM cursor WHERE tenant = ?", (tenant,)).fetchone()
        return int(row[0]) if row else 0

    def move_cursor(self, tenant: str, after: int) -> None:
        self._db.execute(
            "INSERT INTO cursor VALUES (?, ?) ON CONFLICT(tenant) DO UPDATE SET after = excluded.after",
            (tenant, after),
        )

    def entitlements(self, tenant: str) -> EntitlementAnswer | None:
        row = self._db.execute(
            "SELECT flags, fetched FROM entitlements WHERE tenant = ?", (tenant,)
        ).fetchone()
        return EntitlementAnswer(tuple(json.loads(row[0])), float(row[1])) if row else None

    def save_entitlements(self, tenant: str, flags: tuple[str, ...], jti: str) -> EntitlementAnswer:
        answer = EntitlementAnswer(flags, time.time())
        self._db.execute(
            "INSERT INTO entitlements VALUES (?, ?, ?, ?) ON CONFLICT(tenant) DO UPDATE SET "
            "flags = excluded.flags, fetched = excluded.fetched, jti = excluded.jti",
            (tenant, json.dumps(list(flags)), answer.fetched, jti),
        )
        return answer


def read_entitlement_answers(data_dir: Path) -> dict[str, EntitlementAnswer]:
    """The last answer per tenant, read-only, for `edge status` (empty without a ledger)."""
    path = data_dir / FILE
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0) as db:
        try:
            rows = db.execute("SELECT tenant, flags, fetched FROM entitlements").fetchall()
        except sqlite3.OperationalError:
            return {}
    return {t: EntitlementAnswer(tuple(json.loads(f)), float(at)) for t, f, at in rows}
