"""MQTT access for local systems: per-tenant broker users and the rules that confine them to their tenant.

`AccessStore` keeps the users in `<data_dir>/broker/access.json` (0600): for each, its tenant, name, whether it
is read-only, and the password hash in Mosquitto's own PBKDF2-SHA512 format (`$7$<iterations>$<salt>$<hash>`,
which `mosquitto_passwd` writes too); passwords are shown once, when made. From it, `write_broker_files`
renders what Mosquitto reads:

- `passwd`: every user, plus the gateway's own user `_gateway`, whose password is generated once and kept in
  `gateway.password` (0600) for the gateway to log in with;
- `acl`: the gateway may read and write everything; a tenant's user `<name>@<tenant>` may read
  `{prefix}/{tenant}/#` (events, points, status, command results) and, unless read-only, publish write requests
  `{prefix}/{tenant}/cmd/+/+/+/set`; nothing else. Anonymous clients get every topic only while no tenant
  user has ever existed (the broker then listens on loopback only), and are refused from the first one on;
- `conf.d/access.conf`: `allow_anonymous`, `password_file` and `acl_file` (relative to the broker's directory,
  its working directory), included by the embedded broker's config.

Once a tenant user has existed, the marker `<data_dir>/broker-auth-required` stays: anonymous access never comes
back (removing every user leaves only the gateway's), and a broker whose `access.json` is gone (a restore
without it, a deleted directory) refuses to start rather than open every tenant's topics to anyone local.
The files the broker reads belong to its account (edge.bus.broker_process).

The embedded broker re-reads all three on SIGHUP (`edge.bus.broker.reload_broker`), which keeps connected
clients connected; an external Mosquitto can use the same files (docs/mqtt-access.md).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from edge.bus.broker_process import file_owner, write_private
from edge.config.models import BusConfig
from edge.sdk.errors import EdgeError

__all__ = [
    "AUTH_MARKER",
    "GATEWAY_USER",
    "AccessError",
    "AccessStore",
    "MqttUser",
    "local_login",
    "mosquitto_hash",
    "verify_mosquitto_hash",
]

GATEWAY_USER = "_gateway"  # `_` never starts a tenant or user name, so it cannot collide
_ITERATIONS = 20_000  # PBKDF2 rounds: Mosquitto reads them from the hash ($7$ accepts any count)
_SALT_BYTES = 12  # as mosquitto_passwd
_HASH_BYTES = 64
_PASSWORD_BYTES = 24
_STORE = "access.json"
AUTH_MARKER = "broker-auth-required"  # in the data directory, next to `broker/`: tenant users have existed
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # never '@', '+', '#', '/', ':' or spaces


class AccessError(EdgeError):
    """A credential operation was refused; the message names the tenant and user."""


@dataclass(frozen=True, slots=True)
class MqttUser:
    tenant: str
    name: str
    read_only: bool
    created: float
    rotated: float | None = None
    password_hash: str = field(default="", repr=False)

    @property
    def username(self) -> str:
        return f"{self.name}@{self.tenant}"


def local_login(data_dir: Path, bus: BusConfig) -> tuple[str | None, str | None]:
    """The login of a tool on this machine (`edge point write`) to the gateway's bus: the gateway's own user
    on the embedded broker (anonymous access ends with the first tenant user), else `[bus]`'s."""
    if bus.mode == "embedded":
        return GATEWAY_USER, AccessStore(data_dir / "broker", bus.topic_prefix).gateway_password()
    return bus.username, bus.password


def mosquitto_hash(password: str, *, iterations: int = _ITERATIONS, salt: bytes | None = None) -> str:
    """Mosquitto 2's password-file hash: PBKDF2-HMAC-SHA512, `$7$<iterations>$<b64 salt>$<b64 hash>`."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_mosquitto_hash(password: str, hashed: str) -> bool:
    _, kind, iterations, salt, digest = hashed.split("$")
    if kind != "7":
        return False
    expected = base64.b64decode(digest)
    got = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), base64.b64decode(salt), int(iterations), len(expected)
    )
    return secrets.compare_digest(got, expected)


class AccessStore:
    def __init__(
        self,
        broker_dir: Path,
        topic_prefix: str,
        tenant_rules: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    ) -> None:
        self.dir = broker_dir
        self.prefix = topic_prefix
        # Per tenant, more (access, topic) rules for its users: Sparkplug, Home Assistant (edge.bus.dialects);
        # read-only users get only the "read" ones.
        self.tenant_rules = dict(tenant_rules or {})
        self.passwd_path = broker_dir / "passwd"
        self.acl_path = broker_dir / "acl"
        self.conf_dir = broker_dir / "conf.d"  # the embedded broker's `include_dir`
        self.conf_path = self.conf_dir / "access.conf"
        self._path = broker_dir / _STORE
        self._gateway_path = broker_dir / "gateway.password"
        self.marker_path = broker_dir.parent / AUTH_MARKER

    # ---- users -----------------------------------------------------------------------------------------

    def users(self, tenant: str | None = None) -> list[MqttUser]:
        return [u for u in self._load() if tenant is None or u.tenant == tenant]

    def add(self, tenant: str, name: str, *, read_only: bool = False) -> tuple[MqttUser, str]:
        """Create `name@tenant`; returns the user and its password (shown once)."""
        if not _USER_NAME.fullmatch(name):
            raise AccessError(
                f"MQTT user name {name!r} of tenant {tenant!r}: letters, digits, '_', '.', '-' only (1-64)"
            )
        password = _new_password()
        with self._locked() as users:
            if any(u.tenant == tenant and u.name == name for u in users):
                raise AccessError(
                    f"tenant {tenant!r} already has an MQTT user {name!r} (rotate its password?)"
                )
            user = MqttUser(tenant, name, read_only, time.time(), None, mosquitto_hash(password))
            users.append(user)
        return user, password

    def remove(self, tenant: str, name: str) -> None:
        with self._locked() as users:
            kept = [u for u in users if not (u.tenant == tenant and u.name == name)]
            if len(kept) == len(users):
                raise AccessError(f"tenant {tenant!r} has no MQTT user {name!r}")
            users[:] = kept

    def rotate(self, tenant: str, name: str) -> tuple[MqttUser, str]:
        """A new password for `name@tenant`; the old one stops working at the broker's reload."""
        password = _new_password()
        with self._locked() as users:
            for index, user in enumerate(users):
                if user.tenant == tenant and user.name == name:
                    users[index] = MqttUser(
                        tenant, name, user.read_only, user.created, time.time(), mosquitto_hash(password)
                    )
                    return users[index], password
        raise AccessError(f"tenant {tenant!r} has no MQTT user {name!r}")

    def gateway_password(self) -> str:
        """The gateway's own broker password, generated on first use and kept 0600 in the broker directory."""
        with contextlib.suppress(FileNotFoundError):
            return self._gateway_path.read_text().strip()
        password = _new_password()
        write_private(self._gateway_path, password + "\n")
        return password

    def backup_files(self) -> list[Path]:
        """What a backup must keep for the users to survive a restore (all 0600), the marker included."""
        kept = [self._path, self._gateway_path, self.passwd_path, self.acl_path, self.marker_path]
        return [path for path in kept if path.is_file()]

    # ---- broker files ------------------------------------------------------------------------------------

    def anonymous_allowed(self) -> bool:
        return not self._load() and not self.marker_path.exists()

    def apply(self) -> None:
        """(Re)write the broker files from the store, under the store's lock; refuse when the store is gone
        although users existed (the broker would otherwise be opened to anonymous clients)."""
        if self.marker_path.exists() and not self._path.exists():
            raise AccessError(
                f"MQTT users existed but {self._path} is missing: restore it (edge restore of a backup),"
                " re-create the users (edge tenant credentials add), or delete"
                f" {self.marker_path} to allow anonymous local clients"
            )
        with self._locked():
            pass

    def write_broker_files(self) -> None:
        """Render passwd, acl and access.conf from the store (atomically: a reload never reads half a file)."""
        users = self._load()
        anonymous = self.anonymous_allowed()
        gateway = mosquitto_hash(self.gateway_password())
        owner = file_owner(self.dir)
        write_private(
            self.passwd_path,
            "".join(
                f"{name}:{hashed}\n"
                for name, hashed in [(GATEWAY_USER, gateway)] + [(u.username, u.password_hash) for u in users]
            ),
            owner,
        )
        write_private(self.acl_path, self.acl(users, anonymous=anonymous), owner)
        write_private(
            self.conf_path,
            "# Written by the edge gateway from access.json (edge tenant credentials): edits are overwritten.\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            f"password_file {self.passwd_path.relative_to(self.dir)}\n"
            f"acl_file {self.acl_path.relative_to(self.dir)}\n",
            owner,
        )

    def acl(self, users: list[MqttUser], *, anonymous: bool = False) -> str:
        lines = [
            "# Written by the edge gateway from access.json (edge tenant credentials): edits are overwritten."
        ]
        if anonymous:
            lines += [
                "# no tenant credentials yet: anonymous local clients may use every topic",
                "topic readwrite #",
            ]
        lines += ["", f"user {GATEWAY_USER}", "topic readwrite #"]
        for user in sorted(users, key=lambda u: (u.tenant, u.name)):
            base = f"{self.prefix}/{user.tenant}"
            lines += ["", f"user {user.username}", f"topic read {base}/#"]
            if not user.read_only:
                lines.append(f"topic write {base}/cmd/+/+/+/set")
            for access, topic in self.tenant_rules.get(user.tenant, ()):
                if access == "read" or not user.read_only:
                    lines.append(f"topic {access} {topic}")
        return "\n".join(lines) + "\n"

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _load(self) -> list[MqttUser]:
        try:
            raw = orjson.loads(self._path.read_bytes())
        except FileNotFoundError:
            return []
        return [MqttUser(**u) for u in raw["users"]]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[MqttUser]]:
        """Read-modify-write of the store under an exclusive lock (the CLI and the gateway may race)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / (_STORE + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users = self._load()
            yield users
            write_private(
                self._path,
                orjson.dumps({"users": [asdict(u) for u in users]}, option=orjson.OPT_INDENT_2).decode(),
            )
            if users:
                write_private(
                    self.marker_path, "tenant MQTT users exist: the broker refuses anonymous clients\n"
                )
            self.write_broker_files()


def _new_password() -> str:
    return secrets.token_urlsafe(_PASSWORD_BYTES)
