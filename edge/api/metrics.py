"""Prometheus metrics at `GET /metrics`, rendered by prometheus_client from the gateway's own counters.

Nothing is counted twice: each scrape reads the counters the gateway keeps anyway (GatewayStats, the bus,
the module host, the outbox's usage and backlogs) into a fresh registry. Labels are bounded by the
configuration (tenant, site, device, module, consumer, task, route templates), never by data: no point
names, no request paths. Scraping is open to loopback, to `[api] metrics_networks`, and to anyone with
`Authorization: Bearer <[api] metrics_token>`; everyone else gets 403.
API requests are counted by `edge.api.counting.RequestMetrics`.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.api.counting import RequestCounts
from edge.api.deps import ApiState, State, client_address
from edge.api.problems import Problem
from edge.config.models import ApiConfig
from edge.ops.stats import POLL_BUCKETS, DeviceStats
from edge.ops.status import TenantOutbox

router = APIRouter(tags=["metrics"])
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def may_scrape(config: ApiConfig, client: str, authorization: str | None) -> bool:
    if config.metrics_token and authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), config.metrics_token):
            return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return address.is_loopback or any(address in network for network in config.metrics_networks)


# Not in the OpenAPI document: a scraper's endpoint, gateway-wide, outside the tenant API and its tokens.
@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, state: State) -> Response:
    config: ApiConfig = request.app.state.api_config
    if not may_scrape(config, client_address(request), request.headers.get("authorization")):
        raise Problem(403, "metrics are served to loopback, [api] metrics_networks, or the metrics token")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(state, await state.services.outboxes(), await _module_health(state)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


async def _module_health(state: ApiState) -> dict[str, bool]:
    return {name: verdict.ok for name, verdict in (await state.services.modules.health()).items()}


class _Snapshot(Collector):
    """The gateway's counters as metric families, read once per scrape."""

    def __init__(self, state: ApiState, outboxes: list[TenantOutbox], health: dict[str, bool]) -> None:
        self.state, self.outboxes, self.health = state, outboxes, health

    def collect(self) -> Iterator[Metric]:
        yield from self._devices()
        yield from self._outbox()
        yield from self._bus()
        yield from self._modules()
        yield from self._api()
        yield from self._limits()

    def _devices(self) -> Iterator[Metric]:
        services = self.state.services
        labels = ["tenant", "site", "device"]
        up = GaugeMetricFamily("edge_device_up", "1 when the device answered its last poll", labels=labels)
        polls = CounterMetricFamily("edge_device_polls", "Polls of the device", labels=labels)
        failed = CounterMetricFamily("edge_device_poll_failures", "Polls that failed", labels=labels)
        seconds = HistogramMetricFamily(
            "edge_device_poll_duration_seconds", "How long each poll took to read the device", labels=labels
        )
        points = CounterMetricFamily(
            "edge_device_points_read", "Points read with a usable value", labels=labels
        )
        faults = CounterMetricFamily("edge_device_point_faults", "Points read bad (faults)", labels=labels)
        for spec in services.loaded.devices:
            stats = services.stats.devices.get(spec.name)
            if stats is None:
                continue
            key = [spec.tenant, spec.site, spec.name]
            up.add_metric(key, 1.0 if stats.up else 0.0)
            polls.add_metric(key, stats.polls)
            failed.add_metric(key, stats.failed_polls)
            seconds.add_metric(key, _poll_buckets(stats), stats.poll_seconds)
            points.add_metric(key, stats.points_read)
            faults.add_metric(key, stats.bad_points)
        yield from (up, polls, failed, seconds, points, faults)
        uptime = GaugeMetricFamily("edge_uptime_seconds", "Seconds since the gateway started")
        uptime.add_metric([], time.monotonic() - services.stats.started)
        yield uptime
        restarts = CounterMetricFamily("edge_task_restarts", "Restarts of supervised tasks", labels=["task"])
        for task, count in sorted(services.stats.task_restarts.items()):
            restarts.add_metric([task], count)
        yield restarts

    def _outbox(self) -> Iterator[Metric]:
        events = GaugeMetricFamily("edge_outbox_events", "Events held in the outbox", labels=["tenant"])
        size = GaugeMetricFamily("edge_outbox_bytes", "Bytes of events held in the outbox", labels=["tenant"])
        backlog = GaugeMetricFamily(
            "edge_outbox_backlog", "Events a consumer has not yet taken", labels=["tenant", "consumer"]
        )
        for tenant in self.outboxes:
            events.add_metric([tenant.tenant], tenant.events)
            size.add_metric([tenant.tenant], tenant.bytes)
            for consumer, count in tenant.backlogs.items():
                backlog.add_metric([tenant.tenant, consumer], count)
        yield from (events, size, backlog)

    def _bus(self) -> Iterator[Metric]:
        services = self.state.services
        bus, stats = services.bus, services.stats
        yield _gauge("edge_mqtt_connected", "1 while connected to the broker", 1.0 if bus.connected else 0.0)
        yield _gauge("edge_mqtt_inflight", "Publishes sent and not yet acknowledged", bus.inflight)
        yield _gauge("edge_mqtt_inflight_limit", "Most unacknowledged publishes allowed", bus.inflight_limit)
        yield _counter(
            "edge_mqtt_events_published", "Events published (QoS 1, acknowledged)", stats.events_published
        )
        yield _counter(
            "edge_mqtt_point_updates_published", "Retained point updates", stats.point_updates_published
        )
        yield _counter("edge_mqtt_publishes_acked", "Publishes the broker acknowledged", bus.stats.acked)
        commands = CounterMetricFamily("edge_commands", "Write requests by outcome", labels=["outcome"])
        commands.add_metric(["accepted"], stats.commands_accepted)
        commands.add_metric(["rejected"], stats.commands_rejected)
        yield commands

    def _modules(self) -> Iterator[Metric]:
        labels = ["module"]
        running = GaugeMetricFamily(
            "edge_module_enabled", "1 while the module is enabled (runs)", labels=labels
        )
        healthy = GaugeMetricFamily("edge_module_healthy", "1 when its health check passes", labels=labels)
        handled = CounterMetricFamily(
            "edge_module_events_handled", "Events handled (cloud_sync: uploaded)", labels=labels
        )
        errors = CounterMetricFamily("edge_module_handler_errors", "Handler errors", labels=labels)
        retries = CounterMetricFamily(
            "edge_module_retries", "Batches retried later (cloud_sync: uploads)", labels=labels
        )
        dead = CounterMetricFamily("edge_module_dead_letters", "Events dead-lettered", labels=labels)
        for name, hosted in self.state.services.modules.modules.items():
            running.add_metric([name], 1.0 if hosted.state.value == "enabled" else 0.0)
            healthy.add_metric([name], 1.0 if self.health.get(name) else 0.0)
            handled.add_metric([name], hosted.handled)
            errors.add_metric([name], hosted.handler_errors)
            retries.add_metric([name], hosted.retries)
            dead.add_metric([name], hosted.dead_lettered)
        yield from (running, healthy, handled, errors, retries, dead)
        restarts = CounterMetricFamily(
            "edge_module_restarts",
            "Relaunches of an isolated module or sidecar by its supervisor",
            labels=labels,
        )
        circuit = GaugeMetricFamily(
            "edge_module_circuit_open",
            "1 once the module crashed max_crashes times in a row and is no longer relaunched",
            labels=labels,
        )
        for name, supervisor in sorted(self.state.services.supervisors().items()):
            restarts.add_metric([name], supervisor.restarts)
            circuit.add_metric([name], 1.0 if supervisor.circuit_open else 0.0)
        yield from (restarts, circuit)

    def _api(self) -> Iterator[Metric]:
        counts: RequestCounts = self.state.requests
        requests = CounterMetricFamily(
            "edge_api_requests", "API requests answered", labels=["method", "route", "status"]
        )
        for key, count in sorted(counts.requests.items()):
            requests.add_metric(list(key), count)
        seconds = CounterMetricFamily(
            "edge_api_request_seconds", "Time spent answering", labels=["method", "route"]
        )
        for timed, total in sorted(counts.seconds.items()):
            seconds.add_metric(list(timed), total)
        yield from (requests, seconds)
        yield _gauge("edge_api_live_clients", "Open WebSocket streams", self.state.feed.clients())

    def _limits(self) -> Iterator[Metric]:
        yield from _limit_families(self.state.services.stats.quota_samples())


_LIMIT_HELP = {
    "edge_tenant_limit": "A tenant's limit (edge/ops/quotas.py; per second, or streams for ws_clients)",
    "edge_tenant_limit_acted": "Times a tenant's limit slowed or refused it",
    "edge_tenant_limit_units": "Events, requests, commands or streams a tenant's limit slowed or refused",
    "edge_tenant_limit_waited_seconds": "Seconds a tenant waited for its limit",
}


def _limit_families(samples: Iterator[tuple[str, dict[str, str], float]]) -> Iterator[Metric]:
    labels = ["tenant", "limit", "policy"]
    families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
        name: (GaugeMetricFamily if name == "edge_tenant_limit" else CounterMetricFamily)(
            name, text, labels=labels
        )
        for name, text in _LIMIT_HELP.items()
    }
    for name, sample, value in samples:
        families[name].add_metric([sample[label] for label in labels], value)
    yield from families.values()


def _poll_buckets(stats: DeviceStats) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, as the exposition format wants them, ending with +Inf."""
    out, total = [], 0
    for bound, count in zip((*POLL_BUCKETS, float("inf")), stats.poll_buckets, strict=True):
        total += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
    return out


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)
