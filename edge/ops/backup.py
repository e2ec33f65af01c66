"""`edge backup` / `edge restore`: one archive with everything needed to bring a gateway back on a new machine.

The archive (tar.gz) holds:
- `config/`: the configuration file, its `secrets/` directory and the profile files it names by path;
- `data/identity/`: the gateway's key pair and certificate;
- `data/broker/`: the embedded broker's users (`access.json`, the password file, the ACL, the gateway's own
  broker password) and `data/broker-auth-required`, so a restore neither loses the users nor opens the broker
  to anonymous clients (edge.bus.access); 0600 in the archive and on disk; and its last save of local
  subscribers' persistent sessions and their queues (`persistence/mosquitto.db`, edge.bus.broker);
- `data/certs/broker/`: the LAN listeners' CA, server and client certificates with their keys (edge.bus.tls),
  so BMS and SCADA clients that trust the CA keep connecting after a restore;
- `data/<outbox>`, `data/modules/*.sqlite`, `data/tenants/*.db`: every database, copied with SQLite's online
  backup API, so the copy is consistent even while the gateway keeps writing (WAL readers see one snapshot);
- `manifest.json`: release, schema version, gateway id, time, and the size and SHA-256 of every member.

Restore checks every member against the manifest before it writes anything, refuses to overwrite a data
directory that holds an outbox (unless forced) or that a running gateway holds, and puts the configuration
where it is told; the data goes to the data directory that configuration names (relative to it), as
directories 0700 and files 0600.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edge.bus.access import AccessStore
from edge.bus.broker import persistence_file
from edge.bus.tls_files import broker_cert_dir
from edge.ops.firstrun import IDENTITY_DIR, SECRETS_DIR
from edge.ops.instance import AlreadyRunning, InstanceLock
from edge.outbox.migrations import SCHEMA_VERSION, backup_database
from edge.sdk.errors import EdgeError
from edge.version import __version__

__all__ = ["BackupError", "BackupManifest", "create_backup", "database_files", "restore_backup"]

MANIFEST = "manifest.json"
FORMAT = 1
BROKER_DIR = "broker"  # the embedded broker's directory in the data directory (edge.gateway)


class BackupError(EdgeError):
    pass


@dataclass(frozen=True)
class BackupManifest:
    gateway_id: str
    release: str
    created: float
    files: dict[str, dict[str, Any]]  # archive name -> {"size", "sha256", "events"?}

    def events(self) -> int:
        return sum(int(f.get("events", 0)) for f in self.files.values())


def database_files(data_dir: Path, outbox: str) -> list[Path]:
    """Every SQLite database of a gateway: the outbox, module state, and tenants' own databases."""
    found = [data_dir / outbox] if outbox and (data_dir / outbox).is_file() else []
    found += sorted((data_dir / "modules").glob("*.sqlite"))
    found += sorted((data_dir / "tenants").glob("*.db"))
    return found


def create_backup(
    config_path: Path, data_dir: Path, outbox: str, gateway_id: str, dest: Path
) -> BackupManifest:
    """Write the archive to `dest` (atomically: a partial archive never has the final name)."""
    files: dict[str, dict[str, Any]] = {}
    tmp_dest = dest.with_name(dest.name + ".partial")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # database copies go next to the archive, not to /tmp (often a small tmpfs)
    fd = os.open(tmp_dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds identity and secrets
    with (
        tempfile.TemporaryDirectory(prefix=".edge-backup-", dir=dest.parent) as scratch,
        os.fdopen(fd, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w:gz") as tar,
    ):
        for name, path in _plain_members(config_path, data_dir):
            files[name] = _add(tar, name, path)
        for db in database_files(data_dir, outbox):
            copy = Path(scratch) / db.name
            with sqlite3.connect(db, timeout=30.0) as source:
                backup_database(source, copy)
            source.close()
            name = "data/" + db.relative_to(data_dir).as_posix()
            files[name] = {**_add(tar, name, copy), "events": _count_events(copy)}
            copy.unlink()  # one copy at a time: the scratch space never holds more than the largest database
        manifest = BackupManifest(gateway_id, __version__, time.time(), files)
        body = orjson.dumps(
            {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest.__dict__},
            option=orjson.OPT_INDENT_2,
        )
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime, info.mode = len(body), int(time.time()), 0o600
        tar.addfile(info, io.BytesIO(body))
    tmp_dest.replace(dest)
    return manifest


def _plain_members(config_path: Path, data_dir: Path) -> list[tuple[str, Path]]:
    members = [(f"config/{config_path.name}", config_path)]
    base = config_path.parent
    secrets = base / SECRETS_DIR
    if secrets.is_dir():
        members += [(f"config/{SECRETS_DIR}/{p.name}", p) for p in sorted(secrets.iterdir()) if p.is_file()]
    for ref in _profile_paths(config_path):
        path = base / ref
        if path.is_file() and not Path(ref).is_absolute() and ".." not in Path(ref).parts:
            members.append((f"config/{Path(ref).as_posix()}", path))
    identity = data_dir / IDENTITY_DIR
    if identity.is_dir():
        members += [(f"data/{IDENTITY_DIR}/{p.name}", p) for p in sorted(identity.iterdir()) if p.is_file()]
    access = AccessStore(data_dir / BROKER_DIR, topic_prefix="")  # only its file names are used
    kept = access.backup_files()
    persisted = persistence_file(data_dir / BROKER_DIR)
    if persisted.is_file():
        kept.append(persisted)
    certs = broker_cert_dir(data_dir)
    if certs.is_dir():
        kept += sorted(p for p in certs.rglob("*") if p.is_file())
    members += [(f"data/{p.relative_to(data_dir).as_posix()}", p) for p in kept]
    return members


def _profile_paths(config_path: Path) -> list[str]:
    """Profiles named by a path (a file next to the config), not the driver-shipped ones named by name."""
    with config_path.open("rb") as fh:
        raw = tomllib.load(fh)
    refs = {d.get("profile", "") for d in raw.get("devices", []) if isinstance(d, dict)}
    return sorted(r for r in refs if isinstance(r, str) and (r.endswith(".toml") or "/" in r))


def _add(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    """Stream one file into the archive (an outbox may hold gigabytes: never read whole into memory)."""
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    if name.startswith("data/"):
        info.mode = 0o600  # keys, secrets, users and events: the gateway's alone, in the archive too
    info.uname = info.gname = ""
    with path.open("rb") as fh:
        tar.addfile(info, fh)
    return {"size": info.size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _count_events(path: Path) -> int:
    with sqlite3.connect(path) as db:
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:  # a module's state database: no outbox table
            return 0


def read_manifest(archive: Path) -> BackupManifest:
    with tarfile.open(archive, "r:gz") as tar:
        return _manifest(tar, archive)


def _manifest(tar: tarfile.TarFile, archive: Path) -> BackupManifest:
    try:
        member = tar.extractfile(MANIFEST)
        assert member is not None
        body = orjson.loads(member.read())
    except (KeyError, AssertionError, orjson.JSONDecodeError) as exc:
        raise BackupError(f"{archive} is not a gateway backup (no readable {MANIFEST}: {exc})") from None
    if body.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {body.get('format')} is not {FORMAT}")
    if int(body.get("schema_version", 0)) > SCHEMA_VERSION:
        raise BackupError(
            f"{archive} was made by release {body.get('release')} (schema {body['schema_version']}); "
            f"this gateway ({__version__}) knows schema {SCHEMA_VERSION}: restore with that release or newer"
        )
    return BackupManifest(body["gateway_id"], body["release"], body["created"], body["files"])


@dataclass(frozen=True)
class RestoreResult:
    manifest: BackupManifest
    config: Path
    data_dir: Path


def restore_backup(archive: Path, config_dest: Path, *, force: bool = False) -> RestoreResult:
    """Verify the archive, then put the configuration at `config_dest` and the data where it says."""
    with tempfile.TemporaryDirectory(prefix="edge-restore-", dir=_scratch_parent(config_dest)) as scratch:
        root = Path(scratch)
        with tarfile.open(archive, "r:gz") as tar:
            manifest = _manifest(tar, archive)
            tar.extractall(root, filter="data")  # refuses absolute paths, '..' and device files
        _verify(root, manifest, archive)
        config_name = next(n for n in manifest.files if n.startswith("config/") and n.count("/") == 1)
        with (root / config_name).open("rb") as fh:
            data_setting = tomllib.load(fh).get("gateway", {}).get("data_dir", "var")
        data_dir = (config_dest.parent / data_setting).resolve()
        _check_target(config_dest, data_dir, force)
        config_dest.parent.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = InstanceLock(data_dir)
        try:
            lock.acquire()  # no gateway may start on it while we write
        except AlreadyRunning as exc:
            raise BackupError(f"{exc}; stop it before restoring") from None
        try:
            for name in manifest.files:
                top, _, rest = name.partition("/")
                target = (config_dest.parent / rest) if top == "config" else (data_dir / rest)
                if name == config_name:
                    target = config_dest
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                for stale in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
                    stale.unlink(missing_ok=True)  # a WAL of another database would corrupt the restored one
                shutil.move(root / name, target)
                if top == "data":
                    target.chmod(0o600)
        finally:
            lock.release()
    return RestoreResult(manifest, config_dest, data_dir)


def _scratch_parent(config_dest: Path) -> Path:
    """Extract next to the destination: the final moves are then renames on one file system."""
    config_dest.parent.mkdir(parents=True, exist_ok=True)
    return config_dest.parent


def _verify(root: Path, manifest: BackupManifest, archive: Path) -> None:
    for name, entry in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise BackupError(f"{archive}: {name} is listed in the manifest but missing")
        if _sha256(path) != entry["sha256"]:
            raise BackupError(f"{archive}: {name} is damaged (SHA-256 differs from the manifest)")


def _check_target(config_dest: Path, data_dir: Path, force: bool) -> None:
    if force:
        return
    if config_dest.exists():
        raise BackupError(f"{config_dest} exists: refusing to overwrite it (use --force)")
    existing = (sorted(data_dir.glob("*.db")) + database_files(data_dir, "")) if data_dir.is_dir() else []
    if existing:
        raise BackupError(f"{data_dir} already holds {existing[0].name}: refusing to overwrite (use --force)")
