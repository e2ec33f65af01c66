"""The kernel's local MQTT bus: a supervised Mosquitto (`EmbeddedBroker`) and an asyncio client (`MqttBus`)."""

from edge.bus.broker import BrokerError, BrokerMissing, EmbeddedBroker
from edge.bus.mqtt import (
    BusDisconnected,
    BusError,
    BusStats,
    InboundMessage,
    MqttBus,
    PublishRejected,
    Will,
)

__all__ = [
    "BrokerError",
    "BrokerMissing",
    "BusDisconnected",
    "BusError",
    "BusStats",
    "EmbeddedBroker",
    "InboundMessage",
    "MqttBus",
    "PublishRejected",
    "Will",
]
