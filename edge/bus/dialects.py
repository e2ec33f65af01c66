"""The site dialects' topic names and broker rules (Sparkplug B, Home Assistant discovery), kept light.

The embedded broker's ACL (edge/bus/access.py) and the CLI need the names without loading protobuf; the
outputs themselves are edge/bus/sparkplug.py and edge/bus/homeassistant.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.bus.topics import Topics
from edge.config.models import GatewayConfig, SparkplugConfig

__all__ = ["NAMESPACE", "AclRule", "NodeTopics", "dialect_rules", "ha_node_id", "node_topics", "state_topic"]

NAMESPACE = "spBv1.0"

AclRule = tuple[str, str]  # ("read" | "write" | "readwrite", topic filter)

_NOT_ID = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True, slots=True)
class NodeTopics:
    group: str
    node: str

    def node_topic(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device_topic(self, kind: str, device: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{device}"


def node_topics(tenant: str, gateway_id: str, config: SparkplugConfig) -> NodeTopics:
    """A tenant's edge node: group id (default: the tenant), edge node id (default: the gateway)."""
    return NodeTopics(config.group_id or tenant, config.edge_node_id or gateway_id)


def state_topic(host_id: str) -> str:
    """Where a Sparkplug 3.0 primary host application publishes its retained online/offline STATE."""
    return f"{NAMESPACE}/STATE/{host_id}"


def ha_id(*parts: str) -> str:
    """Home Assistant discovery topic levels and unique ids take [a-zA-Z0-9_-] only."""
    return _NOT_ID.sub("_", "_".join(parts))


def ha_node_id(tenant: str) -> str:
    """The `<node_id>` level of a tenant's discovery topics, so one ACL pattern confines them."""
    return ha_id(tenant)


def dialect_rules(config: GatewayConfig) -> dict[str, tuple[AclRule, ...]]:
    """Per tenant, what its broker users may use beyond `{prefix}/{tenant}/#`: its Sparkplug group (read; commands
    to its edge node; its primary host's STATE) and its Home Assistant discovery topics (read), with the gateway's
    online/offline status, which every discovered entity's availability also depends on."""
    rules: dict[str, tuple[AclRule, ...]] = {}
    for tenant in config.tenants:
        found: list[AclRule] = []
        spb = tenant.sparkplug
        if spb is not None and spb.enabled:
            topics = node_topics(tenant.id, config.gateway.id, spb)
            found += [
                ("read", f"{NAMESPACE}/{topics.group}/#"),
                ("write", topics.node_topic("NCMD")),
                ("write", topics.device_topic("DCMD", "+")),
            ]
            if spb.primary_host_id is not None:
                found.append(("readwrite", state_topic(spb.primary_host_id)))
        ha = tenant.homeassistant
        if ha is not None and ha.enabled:
            found.append(("read", f"{ha.discovery_prefix}/+/{ha_node_id(tenant.id)}/#"))
            found.append(("read", Topics(config.bus.topic_prefix).gateway_status(config.gateway.id)))
        if found:
            rules[tenant.id] = tuple(found)
    return rules
