"""Plug-in registry: finds drivers and modules through entry points and checks each on load.

A plug-in is a package with a `manifest.toml` beside its code. Loading checks the manifest (its name must be
the entry point's name, its kind must match the group, its `kernel_api` range must admit this kernel) and the
object against its protocol. A plug-in that fails is recorded in `failures` by name; the others still load.
"""

from __future__ import annotations

import importlib.resources
import logging
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from edge.sdk.drivers import Driver
from edge.sdk.errors import PluginError
from edge.sdk.version import KERNEL_API_VERSION

DRIVER_GROUP = "edge.drivers"
MODULE_GROUP = "edge.modules"

log = logging.getLogger(__name__)

Kind = Literal["driver", "module"]
RunMode = Literal["in_process", "isolated"]
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
_DATA_VERSION = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)")


@dataclass(frozen=True, slots=True)
class Consumes:
    """An event type a module handles, and the range of data versions (`dataversion`) it understands."""

    type: str
    versions: str = ">=1.0,<2"


@dataclass(frozen=True, slots=True)
class Produces:
    """An event type a module publishes: its data version and the pydantic model of its `data`."""

    type: str
    version: str = "1.0"
    schema: str | None = None  # "package.module:Model"


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    kind: Kind
    version: str
    kernel_api: str
    description: str = ""
    entitlement: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    run_mode: RunMode = "in_process"
    consumes: tuple[Consumes, ...] = ()
    produces: tuple[Produces, ...] = ()


def read_manifest(package: str) -> Manifest:
    """Read and check `<package>/manifest.toml`."""
    try:
        text = importlib.resources.files(package).joinpath("manifest.toml").read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (FileNotFoundError, ModuleNotFoundError, TypeError) as exc:  # TypeError: a module, not a package
        raise PluginError(package, f"no manifest.toml in the plug-in's package: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(package, f"manifest.toml: {exc}") from exc
    return parse_manifest(raw, package)


def parse_manifest(raw: dict[str, Any], where: str) -> Manifest:
    """Check a manifest's fields (from manifest.toml, or sent by a sidecar when it registers).

    `where` names the plug-in in errors until the manifest's own name is known."""
    raw = dict(raw)
    try:
        manifest = Manifest(
            name=str(raw.pop("name")),
            kind=raw.pop("kind"),
            version=str(raw.pop("version")),
            kernel_api=str(raw.pop("kernel_api")),
            description=str(raw.pop("description", "")),
            entitlement=raw.pop("entitlement", None),
            run_mode=raw.pop("run_mode", "in_process"),
            consumes=tuple(_consumes(where, c) for c in raw.pop("consumes", [])),
            produces=tuple(_produces(where, p) for p in raw.pop("produces", [])),
            extra=raw,
        )
    except KeyError as exc:
        raise PluginError(where, f"manifest.toml lacks {exc.args[0]!r}") from exc
    except (TypeError, AttributeError) as exc:
        raise PluginError(where, f"manifest.toml: consumes/produces must be tables: {exc}") from exc
    if manifest.kind not in ("driver", "module"):
        raise PluginError(where, f"manifest kind {manifest.kind!r} is neither 'driver' nor 'module'")
    if manifest.run_mode not in ("in_process", "isolated"):
        raise PluginError(manifest.name, f"run_mode {manifest.run_mode!r} is neither in_process nor isolated")
    if manifest.entitlement is not None and not isinstance(manifest.entitlement, str):
        raise PluginError(manifest.name, "entitlement must be a string (the tenant flag)")
    if _SEMVER.fullmatch(manifest.version) is None:
        raise PluginError(manifest.name, f"version {manifest.version!r} is not SemVer (MAJOR.MINOR.PATCH)")
    try:
        if KERNEL_API_VERSION not in SpecifierSet(manifest.kernel_api):
            raise PluginError(
                manifest.name, f"needs kernel API {manifest.kernel_api}, this kernel is {KERNEL_API_VERSION}"
            )
    except InvalidSpecifier as exc:
        raise PluginError(
            manifest.name, f"kernel_api {manifest.kernel_api!r} is not a version range"
        ) from exc
    return manifest


def _consumes(where: str, raw: dict[str, Any]) -> Consumes:
    entry = Consumes(str(raw["type"]), str(raw.get("versions", ">=1.0,<2")))
    try:
        SpecifierSet(entry.versions)
    except InvalidSpecifier as exc:
        raise PluginError(where, f"consumes {entry.type}: {entry.versions!r} is not a version range") from exc
    return entry


def _produces(where: str, raw: dict[str, Any]) -> Produces:
    schema = raw.get("schema")
    entry = Produces(
        str(raw["type"]), str(raw.get("version", "1.0")), None if schema is None else str(schema)
    )
    if _DATA_VERSION.fullmatch(entry.version) is None:
        raise PluginError(where, f"produces {entry.type}: version {entry.version!r} is not MAJOR.MINOR")
    return entry


@dataclass
class LoadedPlugin:
    manifest: Manifest
    obj: Any


class PluginRegistry:
    """Drivers and modules by name. `from_entry_points()` for the gateway; `add_*` is the seam for tests.

    Plug-ins are imported when first asked for, so a gateway that only speaks Modbus never imports the OPC UA
    or BACnet stacks (time and tens of MB of memory); `load_all()` imports every one, for listings and checks.
    """

    def __init__(self) -> None:
        self.drivers: dict[str, LoadedPlugin] = {}
        self.modules: dict[str, LoadedPlugin] = {}
        self.failures: dict[str, str] = {}
        self._pending: dict[tuple[Kind, str], EntryPoint] = {}

    @classmethod
    def from_entry_points(cls, extra: Iterable[EntryPoint] = ()) -> PluginRegistry:
        """Every installed plug-in (plus `extra` entry points, the seam for tests), loaded on first use."""
        registry = cls()
        for ep in [*entry_points(group=DRIVER_GROUP), *entry_points(group=MODULE_GROUP), *extra]:
            registry._pending[("driver" if ep.group == DRIVER_GROUP else "module", ep.name)] = ep
        return registry

    def load_all(self) -> PluginRegistry:
        for kind, name in list(self._pending):
            self._load_pending(kind, name)
        return self

    def _load_pending(self, kind: Kind, name: str) -> None:
        ep = self._pending.pop((kind, name), None)
        if ep is not None:
            self._load(ep, kind)

    def _load(self, ep: EntryPoint, kind: Kind) -> None:
        try:
            obj = ep.load()
            manifest = read_manifest(ep.module)  # the plug-in's package, where manifest.toml sits
            if manifest.name != ep.name:
                raise PluginError(ep.name, f"manifest name {manifest.name!r} differs from entry point")
            if manifest.kind != kind:
                raise PluginError(ep.name, f"manifest says {manifest.kind}, registered as {kind}")
            self._add(kind, manifest, obj)
        except PluginError as exc:
            self._fail(ep.name, exc.reason)
        except Exception as exc:  # a broken plug-in must never stop the others: report it by name
            self._fail(ep.name, f"{type(exc).__name__}: {exc}")

    def _fail(self, name: str, reason: str) -> None:
        self.failures[name] = reason
        log.error("plug-in %s failed to load: %s", name, reason)

    def _add(self, kind: Kind, manifest: Manifest, obj: Any) -> None:
        if kind == "driver":
            driver = obj() if isinstance(obj, type) else obj
            if not isinstance(driver, Driver):
                raise PluginError(manifest.name, "does not implement the edge.sdk.drivers.Driver protocol")
            self.drivers[manifest.name] = LoadedPlugin(manifest, driver)
        else:
            self.modules[manifest.name] = LoadedPlugin(manifest, obj)

    def add_driver(self, manifest: Manifest, driver: Any) -> None:
        self._add("driver", manifest, driver)

    def add_module(self, manifest: Manifest, factory: Any) -> None:
        self._add("module", manifest, factory)

    def module(self, name: str) -> LoadedPlugin | None:
        self._load_pending("module", name)
        return self.modules.get(name)

    def driver(self, name: str) -> Driver:
        self._load_pending("driver", name)
        plugin = self.drivers.get(name)
        if plugin is None:
            reason = self.failures.get(name)
            pending = {n for kind, n in self._pending if kind == "driver"}
            known = ", ".join(sorted(set(self.drivers) | pending)) or "none"
            raise PluginError(
                name, f"failed to load: {reason}" if reason else f"no such driver (known: {known})"
            )
        driver: Driver = plugin.obj
        return driver
