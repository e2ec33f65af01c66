"""Local console accounts, for a gateway without an OpenID Connect issuer (`edge user add|remove|passwd|list`).

Each account has an Argon2id password hash (argon2-cffi, its RFC 9106 low-memory profile), a role and, except
for an admin, a tenant. They live in `{data_dir}/accounts.json`, written atomically and readable by the
gateway's user only (0600). The file is read again whenever it changed, so a password changed with the CLI
counts for the next sign-in of a running gateway. A sign-in with an unknown name still spends one hash, so
its timing does not tell which names exist.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from edge.api.auth import ROLE_RANK, Principal, Role

ACCOUNTS_FILE = "accounts.json"
MIN_PASSWORD = 10  # characters; a console account can write set-points
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_HASHER = PasswordHasher()  # argon2-cffi's defaults: Argon2id, 64 MiB, 3 passes (RFC 9106 second choice)


class AccountError(ValueError):
    """An account cannot be added or changed as asked (the message says why)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    tenant: str | None
    hash: str

    def principal(self) -> Principal:
        return Principal(self.tenant, self.role, f"local:{self.name}")


def accounts_path(data_dir: Path) -> Path:
    return data_dir / ACCOUNTS_FILE


class AccountStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._accounts: dict[str, Account] = {}
        self._stamp: tuple[int, int] | None = None

    def accounts(self) -> list[Account]:
        self._refresh()
        return sorted(self._accounts.values(), key=lambda a: a.name)

    def get(self, name: str) -> Account | None:
        self._refresh()
        return self._accounts.get(name)

    def add(self, name: str, password: str, role: str, tenant: str | None) -> Account:
        if not _NAME.match(name):
            raise AccountError(
                f"account name {name!r}: 1-64 letters, digits and _ . @ -, starting with a letter or digit"
            )
        if role not in ROLE_RANK:
            raise AccountError(f"role {role!r}: viewer, operator or admin")
        if tenant is None and role != "admin":
            raise AccountError(f"a {role} account needs a tenant (only an admin may have none)")
        if self.get(name) is not None:
            raise AccountError(
                f"account {name!r} exists already (change its password with `edge user passwd`)"
            )
        account = Account(name, role, tenant, _hash(password))  # type: ignore[arg-type]
        self._accounts[name] = account
        self._save()
        return account

    def remove(self, name: str) -> None:
        if self.get(name) is None:
            raise AccountError(f"no account {name!r} in {self.path}")
        del self._accounts[name]
        self._save()

    def set_password(self, name: str, password: str) -> None:
        account = self.get(name)
        if account is None:
            raise AccountError(f"no account {name!r} in {self.path}")
        self._accounts[name] = Account(account.name, account.role, account.tenant, _hash(password))
        self._save()

    def verify(self, name: str, password: str) -> Account | None:
        """The account if the password is its own, else None (an unknown name costs the same hash)."""
        account = self.get(name)
        try:
            _HASHER.verify(account.hash if account else _decoy(), password)
        except (VerificationError, InvalidHashError):
            return None
        if account is None:
            return None
        if _HASHER.check_needs_rehash(account.hash):  # parameters raised since: keep the hash current
            self._accounts[name] = Account(account.name, account.role, account.tenant, _HASHER.hash(password))
            self._save()
        return account

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._accounts, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            raw = json.loads(self.path.read_text())
            self._accounts = {a["name"]: Account(**a) for a in raw["accounts"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise AccountError(f"{self.path}: not an accounts file ({exc})") from None
        self._stamp = stamp

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"accounts": [asdict(a) for a in self._accounts.values()]}, indent=1)
        handle, temp = tempfile.mkstemp(prefix=".accounts-", dir=self.path.parent)  # created 0600
        with os.fdopen(handle, "w") as out:
            out.write(body)
        os.replace(temp, self.path)
        stat = self.path.stat()
        self._stamp = (stat.st_mtime_ns, stat.st_size)


@functools.cache
def _decoy() -> str:
    """A hash verified for unknown names, so they take as long as known ones (made once, when first needed)."""
    return _HASHER.hash("no such account")


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)
