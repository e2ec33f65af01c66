"""The gateway's exception tree: one base, and errors that carry the device and point they concern."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DeviceError",
    "DeviceUnreachable",
    "EdgeError",
    "NoTenantContext",
    "OutboxFull",
    "PluginError",
    "SubscriptionUnsupported",
    "UnknownTarget",
    "WriteRejected",
]


class EdgeError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(EdgeError):
    """Invalid configuration; each issue names the file, the field path and the reason."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class ConfigIssue:
    __slots__ = ("file", "location", "reason")

    def __init__(self, file: str, location: str, reason: str) -> None:
        self.file = file
        self.location = location
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}" if self.location else self.file
        return f"{where}: {self.reason}"

    def __repr__(self) -> str:
        return f"ConfigIssue({self.file!r}, {self.location!r}, {self.reason!r})"


class NoTenantContext(EdgeError):
    """Tenant data was touched outside a tenant context."""


class PluginError(EdgeError):
    """A plug-in failed to load or does not satisfy its protocol."""

    def __init__(self, plugin: str, reason: str) -> None:
        self.plugin = plugin
        self.reason = reason
        super().__init__(f"plug-in {plugin!r}: {reason}")


class DeviceError(EdgeError):
    """Something went wrong talking to one device (and possibly one point of it)."""

    def __init__(self, device: str, reason: str, point: str | None = None) -> None:
        self.device = device
        self.point = point
        self.reason = reason
        where = f"device {device!r}" + (f" point {point!r}" if point else "")
        super().__init__(f"{where}: {reason}")


class DeviceUnreachable(DeviceError):
    """The device did not answer (connection refused, timeout, gateway path unavailable)."""


class SubscriptionUnsupported(DeviceError):
    """The device cannot push changes; the kernel polls it instead."""


class WriteRejected(DeviceError):
    """A write was refused before or by the device."""


class UnknownTarget(EdgeError):
    """A command named a device or point the gateway does not have."""


class OutboxFull(EdgeError):
    """The tenant's outbox quota is exhausted and its policy is `refuse_newest`: the event was not stored."""

    def __init__(self, tenant: str, reason: str) -> None:
        self.tenant = tenant
        self.reason = reason
        super().__init__(f"tenant {tenant!r}: {reason}")
