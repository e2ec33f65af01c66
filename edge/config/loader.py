"""Reads a gateway configuration file and the device profiles it names, and validates all of it.

Every problem becomes a `ConfigIssue(file, field path, reason)`; all are collected before `ConfigError` is
raised, so one run of `edge config check` lists everything to fix.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edge.config.models import DeviceConfig, GatewayConfig, ProfileHeader
from edge.config.secrets import resolve_references
from edge.config.suggest import did_you_mean, listing, unknown_key
from edge.config.versions import upgrade
from edge.plugins import PluginRegistry
from edge.sdk.drivers import DeviceSpec, Driver
from edge.sdk.errors import ConfigError, ConfigIssue, PluginError
from edge.sdk.points import PointConfig
from edge.sdk.tenancy import TenantContext


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    config: GatewayConfig
    devices: tuple[DeviceSpec, ...]
    instance: str | None = None  # cluster mode: this process's instance name (`edge run --instance`)

    @property
    def data_dir(self) -> Path:
        """The gateway's data directory; in cluster mode each instance has its own below it."""
        base = (self.path.parent / self.config.gateway.data_dir).resolve()
        if self.config.cluster.enabled and self.instance is not None:
            return base / "instances" / self.instance
        return base

    def tenant_contexts(self) -> dict[str, TenantContext]:
        return {t.id: TenantContext(t.id, t.locale, frozenset(t.entitlements)) for t in self.config.tenants}

    def device(self, name: str) -> DeviceSpec | None:
        return next((d for d in self.devices if d.name == name), None)


def format_location(loc: Sequence[int | str], prefix: str = "", data: Any = None) -> str:
    """`devices[0].connection.port`; with the document `data`, an entry of a list is also named by its
    `name` or `id` (`devices[0] (inv-1).connection.port`), as people know it."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            data = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            label = (data.get("name") or data.get("id")) if isinstance(data, dict) else None
            out += f" ({label})" if isinstance(label, str) and label else ""
        else:
            out += f".{part}" if out else str(part)
            data = data.get(part) if isinstance(data, dict) else None
    return out


def _issues_from(
    exc: ValidationError, file: str, model: type[BaseModel], prefix: str = "", data: Any = None
) -> list[ConfigIssue]:
    """One issue per error; an unknown key names the closest known one (a typo is the usual cause)."""
    return [
        ConfigIssue(
            file,
            format_location(err["loc"], prefix, data),
            unknown_key(model, err["loc"]) if err["type"] == "extra_forbidden" else err["msg"],
        )
        for err in exc.errors()
    ]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), "", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"not valid TOML: {exc}")]) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from None


def load_config(path: Path | str, registry: PluginRegistry, *, resolve_secrets: bool = True) -> LoadedConfig:
    """`resolve_secrets=False` leaves `env:`/`file:` references unresolved, for commands that never use them
    (status, backup, tenant data) and must work without the service's environment."""
    path = Path(path)
    file = str(path)
    raw, issues = upgrade(_read_toml(path), file)
    if not issues and resolve_secrets:
        raw, issues = resolve_references(raw, path)
    if issues:
        raise ConfigError(issues)
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_issues_from(exc, file, GatewayConfig, data=raw)) from None

    issues = _check_references(config, file)
    for index, tenant in enumerate(config.tenants):
        cloud = tenant.cloud
        for key in cloud.key_paths if cloud is not None else ():
            if not (path.parent / key).exists():
                field = "verify_key" if cloud is not None and key == cloud.verify_key else "verify_keys"
                where = f"tenants[{index}] ({tenant.id}).cloud.{field}"
                reason = f"no such file {path.parent / key} (the platform's public key, PEM)"
                issues.append(ConfigIssue(file, where, reason))
    profiles = _ProfileCache(path.parent, registry)
    devices: list[DeviceSpec] = []
    for index, device in enumerate(config.devices):
        where = f"devices[{index}] ({device.name})"
        spec = _device_spec(device, where, file, registry, profiles, issues)
        if spec is not None:
            devices.append(spec)
    _check_module_configs(config, file, registry, issues)
    if issues:
        raise ConfigError(issues)
    return LoadedConfig(path=path, config=config, devices=tuple(devices))


def _check_module_configs(
    config: GatewayConfig, file: str, registry: PluginRegistry, issues: list[ConfigIssue]
) -> None:
    """A module whose class names its pydantic `config_model` has its `[modules.config]` checked at load, so
    `edge config check` reports its errors with file and field path (a missing module is the host's report)."""
    for index, module in enumerate(config.modules):
        plugin = registry.module(module.name) if module.enabled else None
        model = getattr(plugin.obj, "config_model", None) if plugin is not None else None
        if isinstance(model, type) and issubclass(model, BaseModel):
            _validate(model, module.config, file, f"modules[{index}] ({module.name}).config", issues)


def _duplicates(names: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    return {n for n in names if n in seen or seen.add(n)}  # type: ignore[func-returns-value]


def _check_references(config: GatewayConfig, file: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for section, names in (
        ("tenants", [t.id for t in config.tenants]),
        ("sites", [s.id for s in config.sites]),
        ("devices", [d.name for d in config.devices]),
        ("modules", [m.name for m in config.modules]),
    ):
        issues += [ConfigIssue(file, section, f"{name!r} is defined twice") for name in _duplicates(names)]
    tenants = {t.id for t in config.tenants}
    sites = {s.id for s in config.sites}
    for index, device in enumerate(config.devices):
        where = f"devices[{index}] ({device.name})"
        if device.tenant not in tenants:
            issues.append(ConfigIssue(file, f"{where}.tenant", f"unknown tenant {device.tenant!r}"))
        if device.site not in sites:
            issues.append(ConfigIssue(file, f"{where}.site", f"unknown site {device.site!r}"))
    return issues + _check_dialects(config, file)


def _check_dialects(config: GatewayConfig, file: str) -> list[ConfigIssue]:
    """Sparkplug edge nodes must be unique on the broker; Home Assistant entities read the point topics."""
    issues: list[ConfigIssue] = []
    nodes: dict[tuple[str, str], str] = {}
    for index, tenant in enumerate(config.tenants):
        where = f"tenants[{index}] ({tenant.id})"
        spb = tenant.sparkplug
        if spb is not None and spb.enabled:
            node = (spb.group_id or tenant.id, spb.edge_node_id or config.gateway.id)
            if node in nodes:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.sparkplug",
                        f"Sparkplug edge node {node[0]}/{node[1]} is already tenant {nodes[node]!r}'s: "
                        "give this tenant another group_id or edge_node_id",
                    )
                )
            nodes.setdefault(node, tenant.id)
        for dialect, settings in (("sparkplug", spb), ("homeassistant", tenant.homeassistant)):
            if config.bus.mode == "nats" and settings is not None and settings.enabled:
                issues.append(
                    ConfigIssue(
                        file,
                        f"{where}.{dialect}",
                        "needs MQTT retained messages and last wills, which the NATS bus does not carry: "
                        'use [bus] mode = "embedded" or "external"',
                    )
                )
        ha = tenant.homeassistant
        if ha is not None and ha.enabled and not config.bus.point_topics:
            issues.append(
                ConfigIssue(
                    file,
                    f"{where}.homeassistant",
                    "Home Assistant entities read each point's retained topic: set [bus] point_topics = true",
                )
            )
    return issues


def _device_spec(
    device: DeviceConfig,
    where: str,
    file: str,
    registry: PluginRegistry,
    profiles: _ProfileCache,
    issues: list[ConfigIssue],
) -> DeviceSpec | None:
    try:
        driver = registry.driver(device.driver)
    except PluginError as exc:
        issues.append(ConfigIssue(file, f"{where}.driver", exc.reason))
        return None
    connection = _validate(driver.connection_model, device.connection, file, f"{where}.connection", issues)
    points = profiles.points(device.profile, driver, device.driver, file, f"{where}.profile", issues)
    if connection is None or points is None:
        return None
    spec = DeviceSpec(
        name=device.name,
        tenant=device.tenant,
        site=device.site,
        driver=device.driver,
        connection=connection,
        points=points,
        poll_interval=device.poll_interval,
        timeout=device.timeout,
        profile=device.profile,
        mode=device.mode,
    )
    try:
        driver.compile(spec)  # validate once, at load: a plan that cannot be built is a config error
    except ValueError as exc:
        issues.append(ConfigIssue(file, where, f"cannot plan reads: {exc}"))
        return None
    return spec


def _validate(
    model: type[BaseModel], data: Any, file: str, where: str, issues: list[ConfigIssue]
) -> BaseModel | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues.extend(_issues_from(exc, file, model, where))
        return None


class _ProfileCache:
    """Loads each profile file once; a profile is a driver's name or a path relative to the config file."""

    def __init__(self, base: Path, registry: PluginRegistry) -> None:
        self._base = base
        self._registry = registry
        self._loaded: dict[tuple[str, str], tuple[PointConfig, ...] | None] = {}

    def resolve(self, ref: str, driver: Driver) -> Path:
        candidate = Path(ref)
        if candidate.suffix == ".toml" or "/" in ref:
            return candidate if candidate.is_absolute() else self._base / candidate
        shipped: Path | None = getattr(driver, "profiles_dir", None)
        return (shipped or self._base) / f"{ref}.toml"

    def _existing(self, ref: str, path: Path, driver: Driver, driver_name: str) -> str:
        """The profiles there are where `ref` was looked for, closest to it first: a misspelling shows."""
        if path.parent == getattr(driver, "profiles_dir", None):
            shipped = sorted(p.stem for p in path.parent.glob("*.toml"))
            beside = self._beside(ref)
            if beside is not None:  # a saved proposal named as discovery's table names it
                return (
                    f"profiles shipped with {driver_name}: {listing(ref, shipped)}; or a file beside the "
                    f"configuration: did you mean {beside!r}?"
                )
            return f"profiles shipped with {driver_name}: {listing(ref, shipped)} (or a path to a .toml file)"
        files = sorted(p.name for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        return f"profiles in {path.parent}: {listing(path.name, files)}"

    def _beside(self, ref: str) -> str | None:
        """The profile file in a folder beside the configuration (`--save-profiles profiles/`) whose name is
        `ref` or close to it, as a path relative to the configuration."""
        files = {p.stem: p for p in self._base.glob("*/*.toml")}
        best = did_you_mean(ref, files)
        return None if best is None else str(files[best].relative_to(self._base))

    def points(
        self, ref: str, driver: Driver, driver_name: str, file: str, where: str, issues: list[ConfigIssue]
    ) -> tuple[PointConfig, ...] | None:
        key = (driver_name, ref)
        if key not in self._loaded:
            self._loaded[key] = self._load(ref, driver, driver_name, file, where, issues)
        return self._loaded[key]

    def _load(
        self, ref: str, driver: Driver, driver_name: str, file: str, where: str, issues: list[ConfigIssue]
    ) -> tuple[PointConfig, ...] | None:
        path = self.resolve(ref, driver)
        try:
            raw = _read_toml(path)
        except ConfigError as exc:
            reason = f"profile {ref!r}: {exc.issues[0].reason} ({path})"
            if not path.exists():
                reason += f"; {self._existing(ref, path, driver, driver_name)}"
            issues.append(ConfigIssue(file, where, reason))
            return None
        return parse_profile(raw, str(path), driver, driver_name, issues)


def parse_profile(
    raw: Mapping[str, Any], file: str, driver: Driver, driver_name: str, issues: list[ConfigIssue]
) -> tuple[PointConfig, ...] | None:
    before = len(issues)
    header = _validate(ProfileHeader, raw.get("profile", {}), file, "profile", issues)
    if isinstance(header, ProfileHeader) and header.driver != driver_name:
        issues.append(
            ConfigIssue(file, "profile.driver", f"is {header.driver!r}, the device uses {driver_name!r}")
        )
    defaults = raw.get("defaults", {})
    raw_points = raw.get("points")
    if not isinstance(raw_points, list) or not raw_points:
        issues.append(ConfigIssue(file, "points", "a profile needs at least one [[points]] entry"))
        return None
    indexed: list[tuple[int, PointConfig]] = []
    for index, item in enumerate(raw_points):
        name = item.get("name", "?") if isinstance(item, dict) else "?"
        merged = {**defaults, **item} if isinstance(item, dict) else item
        point = _validate(driver.point_model, merged, file, f"points[{index}] ({name})", issues)
        if isinstance(point, PointConfig):
            indexed.append((index, point))
    points = [p for _, p in indexed]
    names = [p.name for p in points]
    issues.extend(ConfigIssue(file, "points", f"point {n!r} is defined twice") for n in _duplicates(names))
    for index, point in indexed:
        if point.scale_factor is not None and point.scale_factor not in names:
            where = f"points[{index}] ({point.name}).scale_factor"
            issues.append(ConfigIssue(file, where, f"no point named {point.scale_factor!r}"))
    return tuple(points) if len(issues) == before else None
