"""What a plug-in's own `edge` commands may use of the kernel.

A plug-in adds commands to `edge` with a typer app named in the `edge.cli` entry-point group; the entry point's
name is the command the app is mounted under, and it may not be one of the kernel's own commands:

    [project.entry-points."edge.cli"]
    billing = "modules.billing.cli:app"     # edge billing report ...

The app stays a thin face, like the kernel's commands: `open_gateway_config(path)` loads the gateway's
configuration file (the common `--config` option is `CONFIG_OPTION`; problems are listed and the command
exits 2, as every `edge` command does), `fail` ends the command with one line on stderr and an exit code,
`send_module_command` sends a command to a module of the running gateway and waits for its answer, and
`open_outbox` / `uplink_status` read the consumer status of the outbox (backlog, last success, dead letters).
If a plug-in's CLI fails to import, `edge` reports it in one line naming the plug-in and the other commands
keep working.

Not re-exported by `edge.sdk`: it imports typer and the kernel's CLI, which drivers and modules do not need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from edge.cli.common import load_or_exit
from edge.cli.module_command_cmd import send
from edge.config import LoadedConfig
from edge.config.models import GatewayConfig
from edge.ops.status import status_file
from edge.outbox.backends import module_store, open_inspector
from edge.outbox.inspect import OutboxInspector, summary_row, uplink_status
from edge.plugins import PluginRegistry
from edge.sdk.store import StateStore
from edge.sdk.tenancy import TenantContext

__all__ = [
    "CONFIG_OPTION",
    "ConfiguredGateway",
    "OutboxInspector",
    "fail",
    "open_gateway_config",
    "open_module_store",
    "open_outbox",
    "send_module_command",
    "summary_row",
    "uplink_status",
]

CONFIG_OPTION: Any = typer.Option(Path("edge.toml"), "--config", "-c", help="Gateway configuration file.")


class ConfiguredGateway:
    """The gateway as its configuration file describes it (built by `open_gateway_config`)."""

    def __init__(self, path: Path, loaded: LoadedConfig) -> None:
        self.path = path  # the configuration file
        self.data_dir = loaded.data_dir
        self.outbox_path = (
            loaded.data_dir / loaded.config.storage.path
        )  # the SQLite outbox's file (backend sqlite)
        self.status_file = status_file(loaded.data_dir)  # rewritten every 2 s while the gateway runs
        self.tenants: dict[str, TenantContext] = loaded.tenant_contexts()  # in the file's order
        self._loaded = loaded

    def module_config(self, name: str) -> dict[str, Any] | None:
        """The `[modules.config]` table of module `name` when it is enabled, else None."""
        modules = self._loaded.config.modules
        return next((m.config for m in modules if m.name == name and m.enabled), None)


def open_gateway_config(path: Path) -> ConfiguredGateway:
    """Load the configuration file at `path` (secret references resolved), or list its problems on stderr and
    exit 2."""
    loaded, _ = load_or_exit(path)
    return ConfiguredGateway(path, loaded)


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command: `message` on stderr, exit code `code`."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def send_module_command(
    gateway: ConfiguredGateway,
    tenant: str,
    module: str,
    action: str,
    args: dict[str, Any],
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Send `action` with `args` to `module` of the running gateway, for `tenant`, over its MQTT bus (as
    `edge module command` does), and return the module's result. Exits 1 on an unknown tenant or a refusal,
    2 when no answer came within `timeout` seconds, with a line on stderr."""
    answer = send(gateway._loaded, tenant, module, action, args, timeout)
    result: dict[str, Any] = answer.get("result", {})
    return result


def open_module_store(gateway: ConfiguredGateway, module: str, *, readonly: bool = True) -> StateStore:
    """A module's state where the gateway keeps it (its SQLite file, or PostgreSQL for an in-process module of
    a gateway on PostgreSQL), not opened; read-only by default (works while the gateway runs). Raises
    FileNotFoundError when a SQLite store was never created."""
    config = gateway._loaded.config
    isolated = _runs_isolated(config, module)
    return module_store(config, gateway.data_dir, module, isolated=isolated, readonly=readonly)


def _runs_isolated(config: GatewayConfig, module: str) -> bool:
    """The run mode the gateway gives `module`: a sidecar (`command`) or `run_mode` in its `[[modules]]` entry,
    else its manifest's."""
    entry = next((m for m in config.modules if m.name == module), None)
    if entry is not None and (entry.command is not None or entry.run_mode is not None):
        return entry.command is not None or entry.run_mode == "isolated"
    plugin = PluginRegistry.from_entry_points().modules.get(module)
    return plugin is not None and plugin.manifest.run_mode == "isolated"


def open_outbox(gateway: ConfiguredGateway, *, writable: bool = False) -> OutboxInspector:
    """The gateway's outbox, read-only (works while the gateway runs); `writable` only for operator actions
    such as `request_replay`. Raises FileNotFoundError while a SQLite outbox was never created; on PostgreSQL
    (`[storage] backend`: the shared tables), ConnectionError when the server is out of reach."""
    return open_inspector(gateway._loaded.config, gateway.data_dir, writable=writable)
