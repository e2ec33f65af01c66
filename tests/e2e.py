"""Building blocks of the end-to-end tests: a gateway configuration on real ports, and an in-process gateway."""

from __future__ import annotations

from pathlib import Path

from edge.config import LoadedConfig, load_config
from edge.plugins import PluginRegistry


def write_config(
    path: Path,
    *,
    mqtt_port: int,
    modbus_port: int,
    devices: int,
    mode: str = "external",
    poll_interval: float = 0.2,
    tenants: tuple[str, ...] = ("acme", "globex"),
    prefix: str = "edge",
    poll_intervals: dict[str, float] | None = None,
    tenant_limits: dict[str, str] | None = None,
    endpoints: list[tuple[int, int]] | None = None,
    profile: str = "sunspec-inverter",
    point_min_interval: float = 0.0,
    entitlements: tuple[str, ...] = ("solar",),
) -> Path:
    """`poll_intervals`: per tenant, overriding `poll_interval`; `tenant_limits`: per tenant, the inline TOML
    table of its `limits` (e.g. "{ ingest_rate = 10 }"); `endpoints`: (port, unit id) of each device when
    they are spread over several simulators (else `devices` units on `modbus_port`), read with `profile`."""
    endpoints = endpoints or [(modbus_port, unit) for unit in range(1, devices + 1)]
    lines = [
        "[gateway]",
        'id = "gw-test"',
        'data_dir = "data"',
        "[bus]",
        f'mode = "{mode}"',
        f"port = {mqtt_port}",
        f"point_min_interval = {point_min_interval}",
        f'topic_prefix = "{prefix}"',
        "[storage]",
        "commit_interval_ms = 5",
    ]
    for tenant in tenants:
        flags = ", ".join(f'"{flag}"' for flag in entitlements)
        lines += ["[[tenants]]", f'id = "{tenant}"', f"entitlements = [{flags}]"]
        if tenant_limits and tenant in tenant_limits:
            lines.append(f"limits = {tenant_limits[tenant]}")
    lines += ["[[sites]]", 'id = "roof"']
    for n, (port, unit) in enumerate(endpoints, start=1):
        tenant = tenants[(n - 1) % len(tenants)]
        lines += [
            "[[devices]]",
            f'name = "inv-{n:02d}"',
            'driver = "modbus"',
            f'tenant = "{tenant}"',
            'site = "roof"',
            f'profile = "{profile}"',
            f"poll_interval = {(poll_intervals or {}).get(tenant, poll_interval)}",
            "timeout = 0.5",
            f'connection = {{ host = "127.0.0.1", port = {port}, unit_id = {unit} }}',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def load(path: Path) -> tuple[LoadedConfig, PluginRegistry]:
    registry = PluginRegistry.from_entry_points()
    return load_config(path, registry), registry
