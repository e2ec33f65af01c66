"""The MQTT topic scheme, in one place (documented in docs/topics.md).

    {prefix}/{tenant}/events/{site}/{device}               CloudEvents about a device (telemetry, status), QoS 1
    {prefix}/{tenant}/points/{site}/{device}/{point}       latest value of one point, retained
    {prefix}/{tenant}/points/{site}/{device}               latest values of all its points, retained
                                                           (instead, with `bus.point_topic_mode = "device"`)
    {prefix}/{tenant}/status/{site}/{device}               device up/down, retained
    {prefix}/{tenant}/cmd/{site}/{device}/{point}/set      write request in
    {prefix}/{tenant}/cmd/{site}/{device}/{point}/result   write result out
    {prefix}/{tenant}/cmd/module/{module}/{action}         module command in (e.g. alarms/ack)
    {prefix}/{tenant}/cmd/module/{module}/{action}/result  the kernel's refusal of one; modules answer with
                                                           an event on {prefix}/{tenant}/events/module/{module}
    {prefix}/{tenant}/reply/...                            MQTT 5 Response Topic of a write request: the
                                                           only place the gateway answers a sender's choice
    {prefix}/_gateway/{gateway}/status                     'online' / 'offline' (last will), retained

The tenant is always the second level, so one ACL pattern (`{prefix}/{tenant}/#`) scopes a local system.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str

    def events(self, tenant: str, subject: str) -> str:
        return f"{self.prefix}/{tenant}/events/{subject}"

    def point(self, tenant: str, site: str, device: str, point: str) -> str:
        return f"{self.prefix}/{tenant}/points/{site}/{device}/{point}"

    def device_points(self, tenant: str, site: str, device: str) -> str:
        return f"{self.prefix}/{tenant}/points/{site}/{device}"

    def device_status(self, tenant: str, site: str, device: str) -> str:
        return f"{self.prefix}/{tenant}/status/{site}/{device}"

    def command(self, tenant: str, site: str, device: str, point: str) -> str:
        return f"{self.prefix}/{tenant}/cmd/{site}/{device}/{point}/set"

    def command_filter(self) -> str:
        return f"{self.prefix}/+/cmd/+/+/+/set"

    def command_result(self, tenant: str, site: str, device: str, point: str) -> str:
        return f"{self.prefix}/{tenant}/cmd/{site}/{device}/{point}/result"

    def command_result_filter(self) -> str:
        return f"{self.prefix}/+/cmd/+/+/+/result"

    def parse_command_result(self, topic: str) -> tuple[str, str, str, str] | None:
        """(tenant, site, device, point) of a write-result topic, or None if it is not one."""
        parts = topic.split("/")
        if len(parts) != 7 or parts[0] != self.prefix or parts[2] != "cmd" or parts[6] != "result":
            return None
        return parts[1], parts[3], parts[4], parts[5]

    def module_command(self, tenant: str, module: str, action: str) -> str:
        return f"{self.prefix}/{tenant}/cmd/module/{module}/{action}"

    def module_command_filter(self) -> str:
        return f"{self.prefix}/+/cmd/module/+/+"

    def module_command_result(self, tenant: str, module: str, action: str) -> str:
        return f"{self.prefix}/{tenant}/cmd/module/{module}/{action}/result"

    def module_events(self, tenant: str, module: str) -> str:
        """Where a module's events (its command results among them) are published: subject module/<name>."""
        return self.events(tenant, f"module/{module}")

    def parse_module_command(self, topic: str) -> tuple[str, str, str] | None:
        """(tenant, module, action) of a module-command topic, or None if it is not one."""
        parts = topic.split("/")
        if len(parts) != 6 or parts[0] != self.prefix or parts[2] != "cmd" or parts[3] != "module":
            return None
        return parts[1], parts[4], parts[5]

    def reply_allowed(self, tenant: str, topic: str) -> bool:
        """Whether an MQTT 5 Response Topic stays in the tenant's `reply/` branch: the gateway publishes there
        as itself, so a sender must not point it at another tenant or at topics others trust (events,
        points, commands)."""
        base = f"{self.prefix}/{tenant}/reply/"
        return (
            topic.startswith(base)
            and len(topic) > len(base)
            and "+" not in topic
            and "#" not in topic
            and len(topic.encode()) <= 1024
        )

    def gateway_status(self, gateway: str) -> str:
        return f"{self.prefix}/_gateway/{gateway}/status"

    def parse_command(self, topic: str) -> tuple[str, str, str, str] | None:
        """(tenant, site, device, point) of a write-request topic, or None if it is not one."""
        parts = topic.split("/")
        if len(parts) != 7 or parts[0] != self.prefix or parts[2] != "cmd" or parts[6] != "set":
            return None
        return parts[1], parts[3], parts[4], parts[5]


def nats_subject(topic: str) -> str:
    """An MQTT topic or filter as the NATS subject nats-server's own MQTT listener maps it to, so NATS and
    MQTT clients of one server meet on the same events: levels become tokens ('/' -> '.'), a '.' inside a
    level becomes '//', and the wildcards '+' and '#' become '*' and '>'."""
    tokens = []
    for level in topic.split("/"):
        if level == "+":
            tokens.append("*")
        elif level == "#":
            tokens.append(">")
        else:
            tokens.append(level.replace(".", "//"))
    return ".".join(tokens)


def mqtt_topic(subject: str) -> str:
    """The MQTT topic of a NATS subject (the inverse of `nats_subject` for topics without wildcards)."""
    return "/".join(token.replace("//", ".") for token in subject.split("."))
