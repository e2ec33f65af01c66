"""Installing the gateway as a systemd service (`edge service install` / `uninstall`).

The standard layout, under `root` ("/" on a real machine; a directory for packaging and tests):
- /etc/systemd/system/edge-gateway.service  the hardened unit (below)
- /etc/sysusers.d/edge-gateway.conf         the unprivileged system user, member of `dialout` (serial ports)
- /etc/tmpfiles.d/edge-gateway.conf         /var/lib/edge-gateway (0700, owned by that user)
- /etc/edge-gateway/edge.toml, secrets/     configuration from `edge init` if none exists (root:edge-gateway)
- /var/lib/edge-gateway/                    outbox, identity, module state, status file
Logs go to the journal (stderr, key=value lines: `journalctl -u edge-gateway`).

The user and directories are declared the systemd way (sysusers.d, tmpfiles.d), so an image builder or a
package gets the same result as a live install; on a live install (`root` is "/") the matching systemd
commands run at once. Uninstall removes the unit and declarations and keeps configuration and data unless
`purge`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge.ops.firstrun import SECRETS_DIR, init_gateway

__all__ = ["ServiceLayout", "install", "render_unit", "uninstall"]

NAME = "edge-gateway"
SERIAL_GROUP = "dialout"  # owns /dev/ttyS*, /dev/ttyUSB*, /dev/ttyACM* on Debian and Ubuntu
WATCHDOG_SEC = 30  # the gateway feeds it every second while it is live (edge.ops.health)


@dataclass(frozen=True)
class ServiceLayout:
    root: Path = Path("/")
    name: str = NAME
    user: str = NAME
    config_dir: Path = Path("/etc") / NAME
    data_dir: Path = Path("/var/lib") / NAME

    def under_root(self, path: Path) -> Path:
        return self.root / path.relative_to("/")

    @property
    def unit(self) -> Path:
        return self.under_root(Path("/etc/systemd/system") / f"{self.name}.service")

    @property
    def sysusers(self) -> Path:
        return self.under_root(Path("/etc/sysusers.d") / f"{self.name}.conf")

    @property
    def tmpfiles(self) -> Path:
        return self.under_root(Path("/etc/tmpfiles.d") / f"{self.name}.conf")

    @property
    def config(self) -> Path:
        return self.config_dir / "edge.toml"

    @property
    def live(self) -> bool:
        return self.root == Path("/")


@dataclass
class Report:
    written: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)  # run (live) or to run (into a root)
    kept: list[Path] = field(default_factory=list)


def render_unit(layout: ServiceLayout, python: str = sys.executable) -> str:
    # Python may live under /root or /home (a venv); ProtectHome=yes would hide it.
    home = "read-only" if python.startswith(("/root/", "/home/")) else "yes"
    return f"""[Unit]
Description=Edge gateway: field devices to MQTT with store and forward
Documentation=man:systemd.service(5)
Wants=network-online.target
After=network-online.target
# Restart on failure, but not in a tight loop: at most 5 starts in 10 minutes.
StartLimitIntervalSec=600
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={python} -m edge.cli run --config {layout.config} --log-format kv
User={layout.user}
Group={layout.user}
SupplementaryGroups={SERIAL_GROUP}
Restart=on-failure
RestartSec=5
WatchdogSec={WATCHDOG_SEC}
TimeoutStopSec=30
Environment=PYTHONUNBUFFERED=1
UMask=0077
LimitNOFILE=65536

# Writable: the data directory only. Configuration is read-only to the gateway.
StateDirectory={layout.data_dir.relative_to("/var/lib")}
StateDirectoryMode=0700
ConfigurationDirectory={layout.config_dir.relative_to("/etc")}
ConfigurationDirectoryMode=0750
ReadWritePaths={layout.data_dir}
ProtectSystem=strict
ProtectHome={home}
PrivateTmp=yes
PrivateMounts=yes
ProtectProc=invisible
RemoveIPC=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictSUIDSGID=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Devices: none but the standard pseudo-devices and serial lines (Modbus RTU), through the {SERIAL_GROUP} group.
DevicePolicy=closed
DeviceAllow=char-ttyS rw
DeviceAllow=char-ttyUSB rw
DeviceAllow=char-ttyACM rw

[Install]
WantedBy=multi-user.target
"""


def _sysusers(layout: ServiceLayout) -> str:
    return (
        f"# The edge gateway's unprivileged system user; serial ports through {SERIAL_GROUP}.\n"
        f'u {layout.user} - "Edge gateway" {layout.data_dir} -\n'
        f"m {layout.user} {SERIAL_GROUP}\n"
    )


def _tmpfiles(layout: ServiceLayout) -> str:
    return (
        "# Data (outbox, identity, module state) belongs to the gateway; configuration is read-only to it.\n"
        f"d {layout.data_dir} 0700 {layout.user} {layout.user} -\n"
        f"d {layout.config_dir} 0750 root {layout.user} -\n"
    )


def install(layout: ServiceLayout, *, python: str = sys.executable, gateway_id: str | None = None) -> Report:
    report = Report()
    for path, text in (
        (layout.unit, render_unit(layout, python)),
        (layout.sysusers, _sysusers(layout)),
        (layout.tmpfiles, _tmpfiles(layout)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
        report.written.append(path)
    config = layout.under_root(layout.config)
    if config.exists():
        report.kept.append(config)
    else:
        init_gateway(
            config,
            gateway_id=gateway_id,
            data_dir=str(layout.data_dir),
            data_path=layout.under_root(layout.data_dir),
        )
        config.chmod(0o640)
        report.written.append(config)
    commands = [
        ["systemd-sysusers", str(layout.sysusers)],
        ["systemd-tmpfiles", "--create", str(layout.tmpfiles)],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", f"{layout.name}.service"],
    ]
    if layout.live:
        for command in commands:
            _run(command)
        _own(layout)
    report.commands = commands
    return report


def _own(layout: ServiceLayout) -> None:
    """Live install: data and secrets belong to the service user; the config is root:user 0640."""
    shutil.chown(layout.config_dir, "root", layout.user)
    shutil.chown(layout.config, "root", layout.user)
    secrets = layout.config_dir / SECRETS_DIR
    if secrets.is_dir():
        for path in [secrets, *secrets.iterdir()]:
            shutil.chown(path, layout.user, layout.user)
    for directory, _, files in os.walk(layout.data_dir):
        shutil.chown(directory, layout.user, layout.user)
        for name in files:
            shutil.chown(Path(directory) / name, layout.user, layout.user)


def uninstall(layout: ServiceLayout, *, purge: bool = False) -> Report:
    report = Report()
    if layout.live:
        _run(["systemctl", "disable", "--now", f"{layout.name}.service"], check=False)
    for path in (layout.unit, layout.sysusers, layout.tmpfiles):
        if path.exists():
            path.unlink()
            report.removed.append(path)
    for directory in (layout.under_root(layout.config_dir), layout.under_root(layout.data_dir)):
        if not directory.exists():
            continue
        if purge:
            shutil.rmtree(directory)
            report.removed.append(directory)
        else:
            report.kept.append(directory)
    report.commands = [["systemctl", "daemon-reload"]]
    if layout.live:
        _run(["systemctl", "daemon-reload"])
    return report


def _run(command: list[str], check: bool = True) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
