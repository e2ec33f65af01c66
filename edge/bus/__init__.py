"""The kernel's local bus: one interface (`Bus`) over MQTT (`MqttBus`, with a supervised Mosquitto,
`EmbeddedBroker`, or an external broker) and NATS JetStream (`edge.bus.nats`, imported only when configured)."""

from edge.bus.base import Bus, BusDisconnected, BusError, BusStats, InboundMessage, PublishRejected
from edge.bus.broker import BrokerError, BrokerMissing, EmbeddedBroker
from edge.bus.mqtt import MqttBus, Will

__all__ = [
    "BrokerError",
    "BrokerMissing",
    "Bus",
    "BusDisconnected",
    "BusError",
    "BusStats",
    "EmbeddedBroker",
    "InboundMessage",
    "MqttBus",
    "PublishRejected",
    "Will",
]
