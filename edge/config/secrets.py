"""Secret references in the configuration, and the set of secret values the log redaction filter hides.

A configuration value may be a reference instead of plain text: `env:NAME` (an environment variable) or
`file:PATH` (the file's content without its trailing newline; a relative PATH is relative to the config file).
`resolve_references` resolves the kernel's own secret fields (`bus.username`, `bus.password`, `api.metrics_token`,
`storage.postgresql.password`, `cluster.dsn`, `cluster.password`) at load;
`check_module_references` checks every reference under `modules[*].config` (modules resolve their own at
start, e.g. cloud sync) for `edge config check` and `edge run`. Errors name the config file and field path.

Every secret the gateway learns (resolved references, and plain values under secret-looking keys) is
registered here; `edge.ops.logs.RedactingFilter` replaces each with `***` in every log line.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

from edge.sdk.errors import ConfigIssue

__all__ = [
    "SecretError",
    "check_module_references",
    "is_reference",
    "known_secrets",
    "register_secret",
    "resolve",
    "resolve_references",
]

_REFERENCE = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")
_SECRET_KEY = re.compile(
    r"(password|passwd|secret|token|api_key|apikey|hmac_key|private_key)$", re.IGNORECASE
)
_KERNEL_SECRETS = (
    ("bus", "username"),
    ("bus", "password"),
    ("api", "metrics_token"),
    ("cluster", "dsn"),
    ("cluster", "password"),
)
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words in log lines

_lock = threading.Lock()
_secrets: set[str] = set()


class SecretError(Exception):
    """A reference cannot be resolved; the message names the reference, never a value."""


def is_reference(value: object) -> bool:
    return isinstance(value, str) and _REFERENCE.match(value) is not None


def register_secret(value: str) -> None:
    """Remember a secret so that no log line ever shows it."""
    if len(value) >= _MIN_SECRET_LEN:
        with _lock:
            _secrets.add(value)


def known_secrets() -> frozenset[str]:
    with _lock:
        return frozenset(_secrets)


def resolve(ref: str, base: Path, *, private: bool = True) -> str:
    """The value behind `env:NAME` or `file:PATH`; registered for redaction. `private`: refuse a secret file
    that others may read (modules' own resolvers decide that for their references)."""
    kind, _, target = ref.partition(":")
    if kind == "env":
        value = os.environ.get(target)
        if not value:
            raise SecretError(f"environment variable {target} is not set (referenced as {ref!r})")
    else:
        path = Path(target) if Path(target).is_absolute() else base / target
        try:
            value = path.read_text().rstrip("\r\n")
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
        if private and mode & 0o077:
            raise SecretError(f"secret file {path} is readable by others (mode {mode:o}); chmod 600 it")
        if not value:
            raise SecretError(f"secret file {path} is empty")
    register_secret(value)
    return value


def resolve_references(raw: dict[str, Any], file: Path) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Resolve the kernel's secret fields in the raw config, check module references; collect issues."""
    issues: list[ConfigIssue] = []
    base = file.parent
    out = dict(raw)
    for section, key in _KERNEL_SECRETS:
        table = out.get(section)
        if isinstance(table, dict) and is_reference(table.get(key)):
            try:
                out[section] = {**table, key: resolve(table[key], base)}
            except SecretError as exc:
                issues.append(ConfigIssue(str(file), f"{section}.{key}", str(exc)))
    _resolve_storage_password(out, file, issues)
    _register_plain(out)
    return out, issues


def _resolve_storage_password(raw: dict[str, Any], file: Path, issues: list[ConfigIssue]) -> None:
    """`storage.postgresql.password`: only ever a reference (the file is often shared, committed, backed up)."""
    storage = raw.get("storage")
    if not isinstance(storage, dict):
        return
    postgresql = storage.get("postgresql")
    if not isinstance(postgresql, dict) or postgresql.get("password") is None:
        return
    where = "storage.postgresql.password"
    ref = postgresql["password"]
    if not is_reference(ref):
        issues.append(
            ConfigIssue(str(file), where, "must be a reference (env:NAME or file:PATH), not the secret")
        )
        return
    try:
        raw["storage"] = {**storage, "postgresql": {**postgresql, "password": resolve(ref, file.parent)}}
    except SecretError as exc:
        issues.append(ConfigIssue(str(file), where, str(exc)))


def check_module_references(raw: dict[str, Any], file: Path) -> list[ConfigIssue]:
    """Resolve every reference under `modules[*].config` (registering the values for redaction) and report
    those that fail. Not part of loading: commands that never start a module (status, sync, backup) must
    work from a shell that lacks the service's environment. `edge config check` and `edge run` call it."""
    issues: list[ConfigIssue] = []
    modules = raw.get("modules")
    if isinstance(modules, list):
        for index, module in enumerate(modules):
            if isinstance(module, dict):
                name = module.get("name", "?")
                where = f"modules[{index}] ({name}).config"
                _check_tree(module.get("config"), where, file, file.parent, issues)
    tenants = raw.get("tenants")
    for index, tenant in enumerate(tenants if isinstance(tenants, list) else []):
        cloud = tenant.get("cloud") if isinstance(tenant, dict) else None
        if isinstance(cloud, dict):  # the downlink's OAuth2 secret, resolved when the gateway starts
            where = f"tenants[{index}] ({tenant.get('id', '?')}).cloud.client_secret"
            _check_tree(cloud.get("client_secret"), where, file, file.parent, issues)
    return issues


def _check_tree(node: object, where: str, file: Path, base: Path, issues: list[ConfigIssue]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _check_tree(value, f"{where}.{key}", file, base, issues)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _check_tree(value, f"{where}[{index}]", file, base, issues)
    elif is_reference(node):
        try:
            resolve(str(node), base, private=False)
        except SecretError as exc:
            issues.append(ConfigIssue(str(file), where, str(exc)))


def _register_plain(node: object, key: str = "") -> None:
    """Plain-text values under secret-looking keys are secrets too (a reference is better; still never logged)."""
    if isinstance(node, dict):
        for k, value in node.items():
            _register_plain(value, str(k))
    elif isinstance(node, list):
        for value in node:
            _register_plain(value, key)
    elif isinstance(node, str) and _SECRET_KEY.search(key) and not is_reference(node):
        register_secret(node)
