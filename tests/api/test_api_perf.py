"""API throughput and latency, measured against the real gateway (run with `pytest -m slow -s`).

Latest values of 1,000 points (50 SunSpec inverters x 20 published points, one tenant) over HTTP/1.1
keep-alive from concurrent clients, and live events delivered per second to N WebSocket clients.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from edge.sdk.events import DEVICE_STATUS, make_event
from simulators.oidc import OidcIssuer
from tests.api_harness import ApiGateway, api_gateway, api_section, issuer_on_a_thread
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, SimulatorProcess, free_port, wait_port, wait_until

pytestmark = pytest.mark.slow
DEVICES = 50


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    yield from issuer_on_a_thread(("acme",))


@pytest.fixture(scope="module")
def gateway_process(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess, issuer: OidcIssuer
) -> Iterator[str]:
    """`edge run` in its own process (as deployed), polling 50 simulated inverters; yields the API's URL."""
    sim = SimulatorProcess(free_port(), DEVICES, ["--sim-time", "12:00"])
    sim.start()
    port = free_port()
    path = write_config(
        tmp_path_factory.mktemp("perf") / "edge.toml",
        mqtt_port=mosquitto.port,
        modbus_port=sim.port,
        devices=DEVICES,
        tenants=("acme",),
        poll_interval=1.0,
    )
    # its own gateway id: the WebSocket test's in-process gateway shares the broker (one MQTT client id each)
    path.write_text(path.read_text().replace('id = "gw-test"', 'id = "gw-perf"'))
    with path.open("a") as f:
        f.write(api_section(issuer.issuer, port))
        # this measures the API's capacity, not the tenant's request limit (50/s by default: tests/ops/test_quotas.py)
        f.write("\n[limits]\napi_rate = 100000\napi_burst = 100000\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(path), "--log-level", "WARNING"]
    )
    try:
        wait_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        sim.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_gateway(
        tmp_path_factory.mktemp("perf-ws"), mosquitto.port, free_port(), 0, 5000, ("acme",)
    )


def test_latest_values_of_1000_points(gateway_process: str, issuer: OidcIssuer) -> None:
    token = issuer.mint(tenant="acme", role="viewer", ttl=600)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=gateway_process, headers=headers, timeout=30) as http:
        wait_until(
            lambda: sum(p["quality"] is not None for p in http.get("/v1/points").json()) >= 1000,
            60,
            "1000 points with values",
            step=0.2,
        )
    with httpx.Client(base_url=gateway_process, headers=headers, timeout=30) as http:
        alone = []
        for _ in range(100):
            started = time.perf_counter()
            http.get("/v1/points").raise_for_status()
            alone.append(time.perf_counter() - started)
    q = statistics.quantiles(alone, n=100)
    print(f"\nGET /v1/points (1000 points), one client: p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms")
    latencies: list[float] = []
    refused: list[str] = []  # a thread's assertion would only warn: what went wrong is asserted below
    clients, seconds = 4, 5.0

    def hammer() -> None:
        with httpx.Client(base_url=gateway_process, headers=headers, timeout=30) as http:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.perf_counter()
                answer = http.get("/v1/points")
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200 or len(answer.content) <= 100_000:
                    refused.append(f"{answer.status_code}: {answer.text[:200]}")

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"\nGET /v1/points (1000 points, {clients} keep-alive clients, gateway polling 50 devices): "
        f"{len(latencies) / seconds:.0f} requests/s, p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms"
    )
    assert refused == []
    assert len(latencies) / seconds > 5


@pytest.mark.parametrize("clients", [1, 10])
def test_live_events_delivered_per_second(api: ApiGateway, clients: int) -> None:
    token, events = api.token("acme"), 5000
    counts = [0] * clients
    sockets = [connect(f"{api.ws_url}?type={DEVICE_STATUS}&access_token={token}") for _ in range(clients)]
    api.wait_for(lambda: api.gateway.api and api.gateway.api.feed.clients() >= clients, what="subscribed")

    def read(index: int) -> None:
        while counts[index] < events:
            orjson.loads(sockets[index].recv(timeout=30))
            counts[index] += 1

    threads = [threading.Thread(target=read, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    batch = [
        make_event(
            type=DEVICE_STATUS, source="/bench", subject=f"roof/d{n}", tenant="acme", time=time.time(),
            data={"device": f"d{n}", "site": "roof", "status": "up", "reason": None},
        )
        for n in range(events)
    ]  # fmt: skip
    for start in range(0, events, 250):  # within each client's queue (ws_queue 5000)
        api.inject(batch[start : start + 250])
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    for ws in sockets:
        ws.close()
    print(
        f"\nWebSocket, {clients} clients: {sum(counts) / elapsed:.0f} events/s delivered in all "
        f"({events} events each in {elapsed:.2f} s, commit to last receipt)"
    )
    assert counts == [events] * clients
