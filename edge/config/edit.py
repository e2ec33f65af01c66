"""Safe edits of the human-written configuration file: comments and order kept (tomlkit), the new text
validated with the full loader before it atomically replaces the old one. Used by the CLI and the REST API."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomlkit

from edge.config.loader import load_config
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError, ConfigIssue


class UnknownTenant(KeyError):
    def __init__(self, config: Path, tenant: str, known: list[str]) -> None:
        super().__init__(f"no tenant {tenant!r} in {config} (tenants: {', '.join(known) or 'none'})")
        self.tenant = tenant


def replace_if_valid(config: Path, text: str, *, dry_run: bool = False) -> None:
    """Replace `config` with `text` if the whole configuration stays valid; raises ConfigError (naming
    `config`, not the temporary file) and leaves the file untouched otherwise. `dry_run`: only check."""
    handle, temp = tempfile.mkstemp(prefix=".edge-", suffix=".toml", dir=config.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    try:
        load_config(Path(temp), PluginRegistry.from_entry_points(), resolve_secrets=False)
    except ConfigError as exc:
        os.unlink(temp)
        raise ConfigError(
            [ConfigIssue(i.file.replace(temp, str(config)), i.location, i.reason) for i in exc.issues]
        ) from None
    if dry_run:
        os.unlink(temp)
    else:
        os.replace(temp, config)


def device_table(
    name: str, driver: str, tenant: str, site: str, profile: str, poll_interval: float, **more: Any
) -> dict[str, Any]:
    """The fields of a `[[devices]]` table (without its connection) in the order the documentation shows."""
    fields = {"name": name, "driver": driver, "tenant": tenant, "site": site, "profile": profile}
    return fields | {"poll_interval": poll_interval} | more


def append_devices(
    config: Path, entries: Iterable[tuple[dict[str, Any], dict[str, Any]]], *, dry_run: bool = False
) -> None:
    """Append `[[devices]]` tables (fields, connection) to the file in one validated replacement, keeping its
    comments and order; raises ConfigError (nothing written) if the result would be invalid. `dry_run`: only
    check."""
    document = tomlkit.parse(config.read_text())
    devices = document.setdefault("devices", tomlkit.aot())
    for fields, connection in entries:
        table = tomlkit.table()
        table.update(fields)
        inline = tomlkit.inline_table()
        inline.update(connection)
        table["connection"] = inline
        devices.append(table)
    replace_if_valid(config, tomlkit.dumps(document), dry_run=dry_run)


def change_entitlements(
    config: Path, tenant: str, *, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """Add and remove a tenant's entitlement flags in the file; returns (old, new) flags. A running gateway
    follows the file (edge.module_host.control). Raises UnknownTenant or ConfigError."""
    document = tomlkit.parse(config.read_text())
    tenants = document.get("tenants")
    entries = [t for t in tenants if str(t.get("id")) == tenant] if isinstance(tenants, list) else []
    if not entries:
        raise UnknownTenant(config, tenant, [str(t.get("id")) for t in tenants or []])
    entry = entries[0]
    old = [str(f) for f in entry.get("entitlements", [])]
    removed = set(remove)
    new = [f for f in old if f not in removed] + [f for f in dict.fromkeys(add) if f not in old]
    if new != old:
        flags = tomlkit.array()
        flags.extend(new)
        entry["entitlements"] = flags
        replace_if_valid(config, tomlkit.dumps(document))
    return old, new
