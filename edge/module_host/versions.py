"""Versioned event data: adaptors between minor versions, the per-module version gate, deprecations.

Every event carries `dataversion` (MAJOR.MINOR). A module's manifest says which range of each type it handles
(`[[consumes]] versions = ">=1.0,<2"`). On the way to the module, the `VersionGate`:
- delivers an event whose version is in range as it is;
- otherwise walks the registered adaptors of that type (each one step, from-version -> to-version, within one
  MAJOR) to a version in range, and delivers the transformed event (a v1.1 event reaches a v1.0 handler);
- otherwise does not deliver it, counts it per type and version, and logs it once. A MAJOR change is a new
  contract: adaptors never cross it, so a module that handles only 1.x never sees a 2.x event.

Deprecations give two minor releases of warning before removal: `deprecate_event_version` and
`deprecated_api` refuse a removal version less than two minors after the release that deprecates.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, ParamSpec, TypeVar

import orjson
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from edge.plugins import Consumes
from edge.sdk.events import StoredEvent

log = logging.getLogger(__name__)

Adaptor = Callable[[dict[str, Any]], dict[str, Any]]
P = ParamSpec("P")
R = TypeVar("R")


def _major_minor(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a MAJOR.MINOR version") from None


class AdaptorRegistry:
    """Transformation adaptors by (event type, from-version, to-version)."""

    def __init__(self) -> None:
        self._steps: dict[str, dict[str, dict[str, Adaptor]]] = {}

    def register(self, type: str, from_version: str, to_version: str, adaptor: Adaptor) -> None:
        source, target = _major_minor(from_version), _major_minor(to_version)
        if source[0] != target[0]:
            raise ValueError(
                f"{type}: adaptors stay within one MAJOR version ({from_version} -> {to_version})"
            )
        steps = self._steps.setdefault(type, {}).setdefault(f"{source[0]}.{source[1]}", {})
        key = f"{target[0]}.{target[1]}"
        if key in steps:
            raise ValueError(f"{type}: an adaptor {from_version} -> {to_version} is already registered")
        steps[key] = adaptor

    def adaptor(self, type: str, from_version: str, to_version: str) -> Callable[[Adaptor], Adaptor]:
        """Decorator form of `register`."""

        def add(function: Adaptor) -> Adaptor:
            self.register(type, from_version, to_version, function)
            return function

        return add

    def path(self, type: str, version: str, accepts: SpecifierSet) -> list[tuple[str, Adaptor]] | None:
        """The shortest chain of adaptors from `version` to one `accepts` admits ([] when it already does)."""
        if accepts.contains(Version(version)):
            return []
        graph = self._steps.get(type, {})
        seen, queue = {version}, deque([(version, list[tuple[str, Adaptor]]())])
        while queue:
            current, chain = queue.popleft()
            for target, step in graph.get(current, {}).items():
                if target in seen:
                    continue
                route = [*chain, (target, step)]
                if accepts.contains(Version(target)):
                    return route
                seen.add(target)
                queue.append((target, route))
        return None


ADAPTORS = AdaptorRegistry()  # the kernel's registry; a module registers adaptors of the types it produces


@dataclass(frozen=True)
class Deprecation:
    what: str
    since: str  # the kernel API release that deprecated it
    removed_in: str  # the first release without it


_DEPRECATED_EVENTS: dict[tuple[str, str], Deprecation] = {}
DEPRECATED_API: dict[str, Deprecation] = {}


def _check_window(what: str, since: str, removed_in: str) -> Deprecation:
    s, r = _major_minor(since), _major_minor(removed_in)
    if r[0] == s[0] and r[1] < s[1] + 2:
        raise ValueError(f"{what}: deprecated in {since}, so removable in {s[0]}.{s[1] + 2} at the earliest")
    return Deprecation(what, since, removed_in)


def deprecate_event_version(type: str, version: str, since: str, removed_in: str) -> None:
    """Mark a data version deprecated: modules receiving it get a warning until it is removed."""
    _DEPRECATED_EVENTS[(type, version)] = _check_window(f"{type} {version}", since, removed_in)


def deprecated_api(since: str, removed_in: str, instead: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a function of the module API deprecated; each call warns (DeprecationWarning), logged once."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        notice = _check_window(function.__qualname__, since, removed_in)
        DEPRECATED_API[function.__qualname__] = notice
        message = (
            f"{function.__qualname__} is deprecated since kernel API {since} and goes in {removed_in}; "
            f"use {instead}"
        )
        logged = False

        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            nonlocal logged
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            if not logged:
                log.warning("%s", message)
                logged = True
            return function(*args, **kwargs)

        return call

    return wrap


class VersionGate:
    """What one module accepts of each consumed type; adapts or refuses (counted) the rest."""

    def __init__(
        self, module: str, consumes: Iterable[Consumes], registry: AdaptorRegistry = ADAPTORS
    ) -> None:
        self.module = module
        self._accepts = {c.type: SpecifierSet(c.versions) for c in consumes}
        self._registry = registry
        self._routes: dict[tuple[str, str], list[tuple[str, Adaptor]] | None] = {}
        self.refused: dict[str, int] = {}  # "type@version" -> events not delivered
        self.adapted = 0
        self._warned: set[tuple[str, str]] = set()

    def admit(self, row: StoredEvent) -> StoredEvent | None:
        """The event as the module may see it, or None (counted) when no version it handles is reachable."""
        accepts = self._accepts.get(row.type)
        if accepts is None:  # a type the manifest does not declare: delivered as stored
            return row
        envelope = orjson.loads(row.body)
        version = str(envelope.get("dataversion", "1.0"))
        self._warn_deprecated(row.type, version)
        key = (row.type, version)
        if key not in self._routes:
            try:
                self._routes[key] = self._registry.path(row.type, version, accepts)
            except ValueError:
                self._routes[key] = None
        route = self._routes[key]
        if route is None:
            label = f"{row.type}@{version}"
            if label not in self.refused:
                log.warning(
                    "module %s handles %s %s, not %s: such events are not delivered to it (counted)",
                    self.module,
                    row.type,
                    accepts,
                    version,
                )
            self.refused[label] = self.refused.get(label, 0) + 1
            return None
        if not route:
            return row
        data = envelope.get("data")
        for target, step in route:
            data = step(data)
            envelope["dataversion"] = target
        envelope["data"] = data
        self.adapted += 1
        return replace(row, body=orjson.dumps(envelope))

    def _warn_deprecated(self, type: str, version: str) -> None:
        notice = _DEPRECATED_EVENTS.get((type, version))
        if notice is None or (type, version) in self._warned:
            return
        self._warned.add((type, version))
        log.warning(
            "module %s receives %s, deprecated since %s and removed in %s",
            self.module,
            notice.what,
            notice.since,
            notice.removed_in,
        )
