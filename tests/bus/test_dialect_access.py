"""Tenant users on the real embedded Mosquitto reach their own Sparkplug group and Home Assistant discovery
topics, and nothing of another tenant's (edge.bus.dialects rules rendered by edge.bus.access)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge.bus.access import GATEWAY_USER, AccessStore
from edge.bus.broker import EmbeddedBroker, reload_broker
from edge.bus.dialects import dialect_rules
from edge.config.models import GatewayConfig
from tests.bus.test_mqtt_access import Client
from tests.helpers import free_port

CONFIG = GatewayConfig.model_validate(
    {
        "gateway": {"id": "gw"},
        "sites": [{"id": "roof"}],
        "tenants": [
            {"id": "acme", "sparkplug": {"primary_host_id": "scada"}, "homeassistant": {}},
            {"id": "globex", "sparkplug": {}, "homeassistant": {}},
        ],
    }
)


async def test_tenant_users_see_only_their_own_sparkplug_group_and_discovery(tmp_path: Path) -> None:
    access = AccessStore(tmp_path / "broker", "edge", dialect_rules(CONFIG))
    broker = EmbeddedBroker(free_port(), tmp_path / "broker", access=access)
    await broker.start()
    _, acme_pw = access.add("acme", "scada")
    _, viewer_pw = access.add("acme", "dash", read_only=True)
    _, globex_pw = access.add("globex", "ha")
    assert reload_broker(broker.data_dir) == broker.pid
    await asyncio.sleep(0.3)  # Mosquitto applies SIGHUP in its next loop turn
    gateway = Client(broker.port, GATEWAY_USER, access.gateway_password())
    acme = Client(broker.port, "scada@acme", acme_pw)
    viewer = Client(broker.port, "dash@acme", viewer_pw)
    globex = Client(broker.port, "ha@globex", globex_pw)
    try:
        gateway.subscribe("spBv1.0/+/NCMD/#", "spBv1.0/+/DCMD/#", "spBv1.0/STATE/#")
        for client in (acme, viewer, globex):
            client.subscribe("spBv1.0/#", "homeassistant/#", "edge/_gateway/#")
        for tenant in ("acme", "globex"):
            gateway.publish(f"spBv1.0/{tenant}/NBIRTH/gw")
            gateway.publish(f"spBv1.0/{tenant}/DDATA/gw/inv-01")
            gateway.publish(f"homeassistant/sensor/{tenant}/edge_gw_{tenant}_inv-01_ac_power/config")
        gateway.publish("edge/_gateway/gw/status", b"online")  # entities' availability: every tenant reads it
        acme.publish("spBv1.0/acme/DCMD/gw/inv-01", b"acme")  # its own device: allowed
        acme.publish("spBv1.0/STATE/scada", b"online")  # its primary host's STATE: allowed
        acme.publish("spBv1.0/globex/DCMD/gw/inv-01", b"no")  # another tenant's group: dropped
        viewer.publish("spBv1.0/acme/NCMD/gw", b"no")  # read-only: dropped
        globex.publish("spBv1.0/acme/NCMD/gw", b"no")  # another tenant's node: dropped
        globex.publish("spBv1.0/STATE/scada", b"no")  # another tenant's host: dropped
        await asyncio.sleep(0.5)
    finally:
        for client in (gateway, acme, viewer, globex):
            client.close()
        await broker.stop()
    own = {
        "spBv1.0/acme/NBIRTH/gw",
        "spBv1.0/acme/DDATA/gw/inv-01",
        "homeassistant/sensor/acme/edge_gw_acme_inv-01_ac_power/config",
        "edge/_gateway/gw/status",
    }
    assert viewer.topics() == own | {"spBv1.0/acme/DCMD/gw/inv-01"}  # sees its tenant's commands, sends none
    assert acme.topics() == own | {"spBv1.0/acme/DCMD/gw/inv-01", "spBv1.0/STATE/scada"}
    assert globex.topics() == {t.replace("acme", "globex") for t in own}  # the gateway status: both
    assert sorted(gateway.got) == [
        ("spBv1.0/STATE/scada", b"online"),
        ("spBv1.0/acme/DCMD/gw/inv-01", b"acme"),
    ]


def test_two_tenants_cannot_share_an_edge_node(tmp_path: Path) -> None:
    import pytest

    from edge.config import load_config
    from edge.plugins import PluginRegistry
    from edge.sdk.errors import ConfigError

    path = tmp_path / "edge.toml"
    path.write_text(
        '[gateway]\nid = "gw"\n[[sites]]\nid = "roof"\n'
        '[[tenants]]\nid = "acme"\n[tenants.sparkplug]\ngroup_id = "site"\n'
        '[[tenants]]\nid = "globex"\n[tenants.sparkplug]\ngroup_id = "site"\n'
    )
    with pytest.raises(ConfigError, match=r"tenants\[1\] \(globex\)\.sparkplug: Sparkplug edge node site/gw"):
        load_config(path, PluginRegistry.from_entry_points())
