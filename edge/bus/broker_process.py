"""Who the embedded Mosquitto runs as, with what environment, and who owns the files it reads.

Mosquitto never sees the gateway's environment (it holds the `env:` secrets of the configuration): it gets
`PATH`, `LANG` and `TZ` only. Started by root, the gateway hands Mosquitto to an unprivileged account (Debian's
`mosquitto`, else `nobody`) before exec, so a flaw in the broker is not a root shell. Mosquitto's own `user`
option is no use here: it drops privileges after reading its files, and then cannot re-read them on SIGHUP.

Because the data directory is 0700 and root's, the broker cannot walk a path into it: it starts with its
directory as working directory (entered while still root) and every path in its configuration is relative to
it. In that directory, owned by root so the broker can plant no link there for root to follow:
- the directory itself is 0710 and `conf.d` (listed by `include_dir`) 0750, group the broker's;
- the files the broker reads (configuration, password file, ACL) are 0600 and owned by the broker's account.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "BrokerAccount",
    "broker_account",
    "broker_environment",
    "enter",
    "file_owner",
    "prepare_broker_dir",
    "write_private",
]

_ACCOUNTS: Final = ("mosquitto", "nobody")  # Debian's mosquitto package creates the first
_KEPT_VARIABLES: Final = ("PATH", "LANG", "TZ")
_DEFAULT_PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    name: str
    uid: int
    gid: int


def broker_account() -> BrokerAccount | None:
    """The unprivileged account Mosquitto runs as, or None when the gateway is not root (it runs as the
    gateway's own user then)."""
    if os.geteuid() != 0:
        return None
    for name in _ACCOUNTS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return BrokerAccount(name, entry.pw_uid, entry.pw_gid)
    raise RuntimeError(f"no unprivileged account for the broker: none of {', '.join(_ACCOUNTS)} exists")


def broker_environment(source: dict[str, str] | None = None) -> dict[str, str]:
    """The broker's whole environment: PATH, LANG and TZ from the gateway's, nothing else."""
    env = dict(os.environ) if source is None else source
    kept: dict[str, str] = {name: env[name] for name in _KEPT_VARIABLES if name in env}
    kept.setdefault("PATH", _DEFAULT_PATH)
    return kept


def enter(broker_dir: Path, account: BrokerAccount | None) -> None:
    """In the broker's child process, before exec: change to its directory (still root: the folders above it
    may be closed to the broker's account), then, as root, drop every group and take the account's group and
    user. Done in the child's own hook, not with `create_subprocess_exec(cwd=, user=, group=, extra_groups=)`:
    uvloop's loop (edge/ops/eventloop.py) takes no account and changes directory only after the hook."""
    os.chdir(broker_dir)
    if account is not None:
        os.setgroups([])
        os.setgid(account.gid)
        os.setuid(account.uid)


def prepare_broker_dir(broker_dir: Path, listed: list[Path], account: BrokerAccount | None) -> None:
    """Create the broker's directory 0700 (0710 and `listed` subdirectories 0750, group the broker's, when
    it runs under its own account)."""
    broker_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for directory in listed:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if account is None:
        return
    for directory, mode in [(broker_dir, 0o710)] + [(d, 0o750) for d in listed]:
        os.chown(directory, 0, account.gid)
        os.chmod(directory, mode)


def file_owner(broker_dir: Path) -> tuple[int, int] | None:
    """Who must own a file the broker reads: None when this process cannot give files away (not root).
    As root: the broker's account when the directory is root's (a gateway running as root), else the
    directory's owner (a gateway running as its own user, this process being a root CLI)."""
    if os.geteuid() != 0:
        return None
    try:
        info = broker_dir.stat()
    except FileNotFoundError:
        info = None
    if info is not None and info.st_uid != 0:
        return info.st_uid, info.st_gid
    account = broker_account()
    assert account is not None  # root has one
    return account.uid, account.gid


def write_private(path: Path, text: str, owner: tuple[int, int] | None = None) -> None:
    """Write 0600 (owned by `owner` when given) through a new temporary file and a rename. The temporary
    file is created exclusively and never through a link, so no one can redirect what root writes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        if owner is not None:
            os.fchown(fd, *owner)
        f.write(text)
    tmp.replace(path)
