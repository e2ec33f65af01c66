"""Configuration file versions: forward migration, refusal with an explanation, and deprecated keys.

A file states its format with a top-level `config_version = N`; a file without it was written before
versioning (0.1.0) and is version 1. Older supported versions are migrated in memory, step by step
(`MIGRATIONS`); the file on disk is left alone and a warning says how to update it. A version newer than this
gateway's, or older than the oldest it can migrate, is refused with what to do.

A deprecated key keeps working for two minor releases (`Deprecation.removed_in`), with a warning naming the
file, the key and its replacement; from `removed_in` on, it is refused with the same explanation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from edge.sdk.errors import ConfigIssue
from edge.version import __version__

__all__ = ["CONFIG_VERSION", "DEPRECATIONS", "MIGRATIONS", "Deprecation", "upgrade"]

log = logging.getLogger(__name__)

CONFIG_VERSION = 1
OLDEST_SUPPORTED = 1

Migration = Callable[[dict[str, Any]], dict[str, Any]]
# MIGRATIONS[n] turns a version-n mapping into version n+1 (pure: no I/O). Add one with each format change.
MIGRATIONS: dict[int, Migration] = {}


@dataclass(frozen=True)
class Deprecation:
    path: tuple[str, ...]  # e.g. ("bus", "old_key")
    replacement: tuple[str, ...] | None  # moved here; None: the key no longer has an effect
    deprecated_in: str  # release that started warning
    removed_in: str  # first release that refuses it: two minor releases later

    def describe(self) -> str:
        where = ".".join(self.path)
        if self.replacement is None:
            return f"{where} is deprecated since {self.deprecated_in} and has no effect; remove it"
        return f"{where} is deprecated since {self.deprecated_in}; use {'.'.join(self.replacement)}"


DEPRECATIONS: tuple[Deprecation, ...] = ()


def upgrade(
    raw: dict[str, Any],
    file: str,
    *,
    migrations: Mapping[int, Migration] | None = None,
    deprecations: Sequence[Deprecation] | None = None,
    current: int = CONFIG_VERSION,
    oldest: int = OLDEST_SUPPORTED,
    release: str = __version__,
) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """The mapping at the current format, without `config_version`, and the issues that refuse it."""
    migrations = MIGRATIONS if migrations is None else migrations
    deprecations = DEPRECATIONS if deprecations is None else deprecations
    data = dict(raw)
    version = data.pop("config_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return data, [ConfigIssue(file, "config_version", f"must be a whole number >= 1, got {version!r}")]
    if version > current:
        reason = (
            f"this file is written for configuration format {version}; this gateway ({release}) reads formats"
            f" up to {current}: upgrade the gateway or use the configuration of the installed release"
        )
        return data, [ConfigIssue(file, "config_version", reason)]
    if version < oldest:
        reason = (
            f"format {version} is too old for this gateway ({release}), which migrates formats {oldest}"
            f" to {current}: upgrade through an intermediate release, or rewrite it from `edge init`"
        )
        return data, [ConfigIssue(file, "config_version", reason)]
    while version < current:
        step = migrations.get(version)
        if step is None:
            return data, [ConfigIssue(file, "config_version", f"no migration from format {version}")]
        data = step(data)
        version += 1
        log.warning(
            "%s: migrated in memory to configuration format %d; set config_version = %d",
            file,
            version,
            current,
        )
    return data, _apply_deprecations(data, file, deprecations, Version(release))


def _apply_deprecations(
    data: dict[str, Any], file: str, deprecations: Sequence[Deprecation], release: Version
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for dep in deprecations:
        parent = _table(data, dep.path[:-1])
        if parent is None or dep.path[-1] not in parent:
            continue
        if release >= Version(dep.removed_in):
            issues.append(
                ConfigIssue(file, ".".join(dep.path), f"{dep.describe()} (removed in {dep.removed_in})")
            )
            continue
        log.warning("%s: %s; it will be refused from %s on", file, dep.describe(), dep.removed_in)
        value = parent.pop(dep.path[-1])
        if dep.replacement is not None:
            target = _table(data, dep.replacement[:-1], create=True)
            assert target is not None
            target.setdefault(dep.replacement[-1], value)  # an explicit new key wins over the old one
    return issues


def _table(data: dict[str, Any], path: Sequence[str], create: bool = False) -> dict[str, Any] | None:
    node = data
    for part in path:
        child = node.get(part)
        if not isinstance(child, dict):
            if not create:
                return None
            child = {}
        child = dict(child)  # never mutate the caller's nested tables
        node[part] = child
        node = child
    return node
