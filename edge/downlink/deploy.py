"""Configuration deployments from the platform: validate, apply live, check health, or roll back.

A deployment message carries a `version` and either a `patch` (this tenant's `devices` to upsert or remove,
its `entitlements`, and for the operator's tenant `[[modules]]` entries) or a whole `file` (operator only).
The patch is applied to the file's text with tomlkit, so comments and order stay. Then:

1. validate the new text with the checks of `edge config check` (the loader, module secret references);
   refused with the loader's issues, nothing changed;
2. journal the text before (edge.config.history) and replace the file atomically;
3. apply it live (`Gateway.reconfigure`: devices added, changed, removed; entitlements);
4. wait up to `deploy_timeout` for every added or changed device to be up; if one is not, write the text
   before back, apply it, and report the deployment rolled back with each device's reason;
5. record the version (applied or rolled back) and clear the journal.

A gateway killed between 2 and 5 restores the text before at its next start (`recover_interrupted`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from edge.config import LoadedConfig, load_config
from edge.config.history import ConfigHistory, write_atomically
from edge.config.secrets import check_module_references
from edge.devices.fleet import DeviceChanges
from edge.downlink.commands import Outcome
from edge.downlink.signing import Refused
from edge.plugins import PluginRegistry
from edge.sdk.errors import ConfigError

__all__ = ["DeployServices", "Deployer", "patched_text"]

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,63}$")
HEALTH_POLL = 0.2  # seconds between looks at the changed devices


@dataclass(frozen=True)
class DeployServices:
    path: Path
    registry: PluginRegistry
    history: ConfigHistory
    reconfigure: Callable[[LoadedConfig], Awaitable[DeviceChanges]]  # Gateway.reconfigure
    down: Callable[[Sequence[str]], dict[str, str]]  # LiveDevices.down
    timeout: float


class Deployer:
    def __init__(self, services: DeployServices) -> None:
        self._s = services
        self._lock = asyncio.Lock()  # one deployment at a time, whichever tenant sent it

    async def deploy(self, tenant: str, scope: str, claims: dict[str, Any]) -> Outcome:
        version = claims.get("version")
        if not isinstance(version, str) or not _VERSION.match(version):
            return Outcome("refused", "a deployment carries a 'version' (a name of 1..64 characters)")
        async with self._lock:
            try:
                return await self._deploy(tenant, scope, version, claims)
            except Refused as exc:
                log.warning("deployment %s from tenant %s refused: %s", version, tenant, exc.reason)
                return Outcome("refused", exc.reason, version)

    async def _deploy(self, tenant: str, scope: str, version: str, claims: dict[str, Any]) -> Outcome:
        path = self._s.path
        before = path.read_text()
        after = patched_text(before, tenant, scope, claims)
        await asyncio.to_thread(self._validate, after)
        self._s.history.begin(tenant, str(claims["jti"]), version, before)
        write_atomically(path, after)
        changes = await self._s.reconfigure(await asyncio.to_thread(load_config, path, self._s.registry))
        down = await self._wait_healthy(changes.touched)
        detail: dict[str, Any] = {
            "added": list(changes.added),
            "changed": list(changes.changed),
            "removed": list(changes.removed),
        }
        if down:
            reason = "not healthy within {:.0f} s: {}".format(
                self._s.timeout, "; ".join(f"{name}: {why}" for name, why in sorted(down.items()))
            )
            write_atomically(path, before)
            await self._s.reconfigure(await asyncio.to_thread(load_config, path, self._s.registry))
            self._s.history.record(
                after, source="deployment", label=version, status="rolled_back", reason=reason
            )
            self._s.history.record(before, source="rollback", label=version, reason=f"{version}: {reason}")
            self._s.history.end()
            log.error("deployment %s rolled back: %s", version, reason)
            return Outcome("rolled_back", reason, version, {**detail, "down": down})
        self._s.history.record(after, source="deployment", label=version, status="applied")
        self._s.history.end()
        log.info("deployment %s from tenant %s applied", version, tenant)
        return Outcome("done", None, version, detail)

    def _validate(self, text: str) -> None:
        """The checks of `edge config check`, on the new text beside the file (profiles resolve the same)."""
        path = self._s.path
        handle, temp = tempfile.mkstemp(prefix=".edge-deploy-", suffix=".toml", dir=path.parent)
        with os.fdopen(handle, "w") as out:
            out.write(text)
        try:
            load_config(Path(temp), self._s.registry)
            issues = check_module_references(tomlkit.parse(text).unwrap(), path)
        except ConfigError as exc:
            issues = list(exc.issues)
        finally:
            os.unlink(temp)
        if issues:
            listed = "; ".join(f"{i.location or '(file)'}: {i.reason}" for i in issues)
            raise Refused(f"validation failed: {listed}")

    async def _wait_healthy(self, devices: Sequence[str]) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._s.timeout
        down = self._s.down(devices)
        while down and loop.time() < deadline:
            await asyncio.sleep(HEALTH_POLL)
            down = self._s.down(devices)
        return down


def patched_text(text: str, tenant: str, scope: str, claims: dict[str, Any]) -> str:
    """The configuration text after the deployment (comments kept); raises Refused when it reaches beyond
    what the tenant may change (`scope`: 'tenant' or 'gateway')."""
    if "file" in claims:
        if scope != "gateway":
            raise Refused("a whole-file deployment needs deployments = 'gateway' for this tenant")
        if not isinstance(claims["file"], str):
            raise Refused("'file' must be the configuration's TOML text")
        return _same_gateway(text, claims["file"])
    patch = claims.get("patch")
    if not isinstance(patch, dict) or not patch:
        raise Refused("a deployment carries a 'patch' (devices, entitlements, modules) or a 'file'")
    unknown = set(patch) - {"devices", "entitlements", "modules"}
    if unknown:
        raise Refused(f"unknown patch sections {sorted(unknown)} (devices, entitlements, modules)")
    document = tomlkit.parse(text)
    if "devices" in patch:
        _patch_devices(document, tenant, scope, patch["devices"])
    if "entitlements" in patch:
        _patch_entitlements(document, tenant, patch["entitlements"])
    if "modules" in patch:
        if scope != "gateway":
            raise Refused("[[modules]] are the operator's: this tenant's deployments may not change them")
        _patch_entries(document, "modules", "name", patch["modules"], [])
    return tomlkit.dumps(document)


def _same_gateway(before: str, after: str) -> str:
    try:
        old, new = tomlkit.parse(before).unwrap(), tomlkit.parse(after).unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise Refused(f"validation failed: not valid TOML: {exc}") from None
    if old.get("gateway") != new.get("gateway"):
        raise Refused("a deployment may not change [gateway] (its id and data directory)")
    if _tenant_ids(old) != _tenant_ids(new):
        raise Refused("a deployment may not add or remove tenants (their storage opens at start)")
    return after


def _tenant_ids(document: dict[str, Any]) -> list[str]:
    tenants = document.get("tenants")
    return (
        sorted(str(t.get("id")) for t in tenants if isinstance(t, dict)) if isinstance(tenants, list) else []
    )


def _patch_devices(document: tomlkit.TOMLDocument, tenant: str, scope: str, devices: Any) -> None:
    if not isinstance(devices, dict) or set(devices) - {"upsert", "remove"}:
        raise Refused("patch.devices is {'upsert': [device tables], 'remove': [device names]}")
    upsert, remove = devices.get("upsert", []), devices.get("remove", [])
    if not isinstance(upsert, list) or not all(isinstance(d, dict) for d in upsert):
        raise Refused("patch.devices.upsert must be a list of device tables")
    if not isinstance(remove, list) or not all(isinstance(n, str) for n in remove):
        raise Refused("patch.devices.remove must be a list of device names")
    existing = {str(d.get("name")): str(d.get("tenant")) for d in document.get("devices", [])}
    for device in upsert:
        device.setdefault("tenant", tenant)
    if scope != "gateway":
        for name in [str(d.get("name")) for d in upsert] + remove:
            owner = existing.get(name)
            if owner is not None and owner != tenant:
                raise Refused(f"device {name!r} belongs to tenant {owner!r}, not {tenant!r}")
        for device in upsert:
            if device["tenant"] != tenant:
                raise Refused(f"device {device.get('name')!r} would belong to tenant {device['tenant']!r}")
    missing = [n for n in remove if n not in existing]
    if missing:
        raise Refused(f"cannot remove {missing}: no such devices")
    _patch_entries(document, "devices", "name", upsert, remove)


def _patch_entitlements(document: tomlkit.TOMLDocument, tenant: str, flags: Any) -> None:
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise Refused("patch.entitlements must be a list of flags (this tenant's, all of them)")
    entries = [t for t in document.get("tenants", []) if str(t.get("id")) == tenant]
    if not entries:
        raise Refused(f"tenant {tenant!r} is not in the configuration")
    array = tomlkit.array()
    array.extend(flags)
    entries[0]["entitlements"] = array


def _patch_entries(
    document: tomlkit.TOMLDocument,
    key: str,
    name_key: str,
    upsert: Sequence[dict[str, Any]],
    remove: Sequence[str],
) -> None:
    """Upsert tables of an array of tables by name (a changed one keeps its place and comments), remove
    others."""
    current = document.get(key)
    if current is None:
        current = AoT([])
        document[key] = current
    if not isinstance(current, AoT):
        raise Refused(f"[[{key}]] in the file is not an array of tables")
    for entry in upsert:
        if not isinstance(entry.get(name_key), str):
            raise Refused(f"every {key} entry has a '{name_key}'")
        match = next((t for t in current if t.get(name_key) == entry[name_key]), None)
        if match is None:
            table = tomlkit.table()
            table.update(entry)
            current.append(table)
        else:
            _replace_table(match, entry)
    for name in remove:
        index = next(i for i, t in enumerate(current) if t.get(name_key) == name)
        del current[index]


def _replace_table(table: Table, entry: dict[str, Any]) -> None:
    for stale in [k for k in table if k not in entry]:
        del table[stale]
    for k, v in entry.items():
        if table.get(k) != v:
            table[k] = v
