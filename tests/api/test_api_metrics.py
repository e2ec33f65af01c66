"""`/metrics` read by prometheus_client's own parser, from a gateway polling the Modbus simulator.

The gateway trusts X-Forwarded-For from 127.0.0.1, so the tests can speak as a scraper from any address. A
sidecar that exits at once ("crashy") is relaunched by its supervisor until its circuit opens.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.api_harness import LocalGateway, local_gateway
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, wait_until

TOKEN = "scrape-token-0123456789"
CRASHY = f"""
[[modules]]
name = "crashy"
command = ["{sys.executable}", "-c", "import sys; sys.exit(3)"]
[modules.limits]
max_crashes = 2
"""


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[LocalGateway]:
    settings = (
        f'trusted_proxies = ["127.0.0.1"]\nmetrics_networks = ["10.0.0.0/8"]\nmetrics_token = "{TOKEN}"'
    )
    with SimulatorProcess(free_port(), 2, ["--sim-time", "12:00"]) as sim:
        yield from local_gateway(
            tmp_path_factory.mktemp("metrics"),
            mosquitto.port,
            sim.port,
            (),
            devices=2,
            api_settings=settings,
            more_config='[[modules]]\nname = "solar"\n' + CRASHY,
        )


def _samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    (match,) = [s for s in samples[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return float(match.value)


def test_metrics_cover_devices_outbox_bus_modules_and_requests(scraped: LocalGateway) -> None:
    with scraped.client() as http:

        def polled() -> dict[str, list[Sample]] | None:
            answer = http.get("/metrics")
            assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
            samples = _samples(answer.text)
            ups = samples.get("edge_device_up", [])
            return samples if len(ups) == 2 and all(s.value == 1 for s in ups) else None

        samples = wait_until(polled, 15, "both devices up in /metrics")
        http.get("/v1/devices")  # a 401 without a session: counted too
        samples = _samples(http.get("/metrics").text)
    device = {"tenant": "acme", "site": "roof", "device": "inv-01"}
    assert _value(samples, "edge_device_polls_total", **device) >= 1
    assert _value(samples, "edge_device_points_read_total", **device) > 0
    assert _value(samples, "edge_device_poll_duration_seconds_sum", **device) > 0
    assert _value(samples, "edge_device_point_faults_total", **device) >= 0
    assert _value(samples, "edge_outbox_events", tenant="globex") > 0
    assert _value(samples, "edge_outbox_backlog", tenant="acme", consumer="mqtt") >= 0
    assert _value(samples, "edge_mqtt_connected") == 1
    assert _value(samples, "edge_mqtt_inflight_limit") >= 1
    assert _value(samples, "edge_mqtt_events_published_total") > 0
    assert _value(samples, "edge_api_requests_total", method="GET", route="/v1/devices", status="401") == 1
    assert _value(samples, "edge_api_requests_total", method="GET", route="/metrics", status="200") >= 1
    assert _value(samples, "edge_module_enabled", module="solar") == 1
    assert _value(samples, "edge_module_events_handled_total", module="solar") >= 0
    consumers = {s.labels["consumer"] for s in samples["edge_outbox_backlog"] if s.labels["tenant"] == "acme"}
    assert "mqtt" in consumers and any(c.startswith("module:solar:") for c in consumers), consumers
    # bounded labels: nothing carries a point name or a raw path
    labels = {value for values in samples.values() for s in values for value in s.labels.values()}
    assert not labels & {"ac_power", "energy_total", "/v1/devices/inv-01"}


def test_poll_durations_are_a_histogram_per_device_with_fixed_buckets(scraped: LocalGateway) -> None:
    with scraped.client() as http:
        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
    family = families["edge_device_poll_duration_seconds"]
    assert family.type == "histogram"
    for device in ("inv-01", "inv-02"):
        mine = [s for s in family.samples if s.labels.get("device") == device]
        buckets = [s for s in mine if s.name.endswith("_bucket")]
        bounds = [s.labels["le"] for s in buckets]
        assert bounds[-1] == "+Inf" and len(bounds) == 13, bounds  # the same buckets whatever the device does
        counts = [s.value for s in buckets]
        assert counts == sorted(counts)  # cumulative
        (count,) = [s.value for s in mine if s.name.endswith("_count")]
        assert count == counts[-1] >= 1
        assert counts[bounds.index("5.0")] == count  # a Modbus poll on loopback never takes 5 s


def test_an_isolated_modules_restarts_and_open_circuit_are_exported(scraped: LocalGateway) -> None:
    with scraped.client() as http:

        def circuit_open() -> dict[str, list[Sample]] | None:
            samples = _samples(http.get("/metrics").text)
            opened = samples.get("edge_module_circuit_open", [])
            return samples if any(s.value == 1 for s in opened) else None

        samples = wait_until(circuit_open, 20, "the crashing sidecar's circuit open in /metrics")
    assert _value(samples, "edge_module_circuit_open", module="crashy") == 1
    assert _value(samples, "edge_module_restarts_total", module="crashy") == 1  # launched twice, then stopped
    assert _value(samples, "edge_module_healthy", module="crashy") == 0
    assert "solar" not in {s.labels["module"] for s in samples["edge_module_restarts_total"]}  # in-process


def test_scraping_is_open_to_loopback_configured_networks_and_the_token_only(scraped: LocalGateway) -> None:
    with scraped.client() as http:
        outside = {"X-Forwarded-For": "203.0.113.9"}
        refused = http.get("/metrics", headers=outside)
        assert refused.status_code == 403 and "metrics_networks" in refused.json()["detail"]
        assert http.get("/metrics", headers={"X-Forwarded-For": "10.4.5.6"}).status_code == 200
        assert http.get("/metrics", headers=outside | {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        wrong = outside | {"Authorization": f"Bearer {TOKEN}x"}
        assert http.get("/metrics", headers=wrong).status_code == 403
