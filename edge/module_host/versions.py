"""The per-module version gate over versioned event data (the adaptors and deprecations it applies are
registered through `edge.sdk.versions`).

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

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import orjson
from packaging.specifiers import SpecifierSet

from edge.plugins import Consumes
from edge.sdk.events import StoredEvent
from edge.sdk.versions import ADAPTORS, AdaptorRegistry, deprecation_of

log = logging.getLogger(__name__)

Adaptor = Callable[[dict[str, Any]], dict[str, Any]]

# The data version of the last event bodies, shared by the gates of this process: every module's gate looks at
# every event it is offered, and parsing the whole body once per module only to read its version was a
# measurable part of the building's module cost. The same bytes object reaches every module (its hash is
# computed once).
_VERSIONS: dict[bytes, str] = {}
_VERSIONS_KEPT = 256


def _data_version(body: bytes) -> str:
    version = _VERSIONS.get(body)
    if version is None:
        version = str(orjson.loads(body).get("dataversion", "1.0"))
        if len(_VERSIONS) >= _VERSIONS_KEPT:
            del _VERSIONS[next(iter(_VERSIONS))]  # the oldest
        _VERSIONS[body] = version
    return version


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
        version = _data_version(row.body)
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
        envelope = orjson.loads(row.body)
        data = envelope.get("data")
        for target, step in route:
            data = step(data)
            envelope["dataversion"] = target
        envelope["data"] = data
        self.adapted += 1
        return replace(row, body=orjson.dumps(envelope))

    def _warn_deprecated(self, type: str, version: str) -> None:
        notice = deprecation_of(type, version)
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
