"""The API as deployed: `edge run` in its own process, probed from outside (issue 21).

A 200 MB body sent without a token must not grow the gateway (measured with psutil on the gateway's process),
bearer tokens in `?access_token=` must not reach its log, X-Forwarded-For from an unconfigured peer must not
change the client address the limiter counts, and an unexpected error is a problem+json 500 that tells the
client nothing about the gateway's insides. The clients are the standard library's sockets and http.client,
httpx and websockets; the issuer is the test OIDC issuer.
"""

from __future__ import annotations

import http.client
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from simulators.oidc import OidcIssuer
from tests.api_harness import api_section, issuer_on_a_thread
from tests.e2e import write_config
from tests.helpers import MosquittoProcess, free_port, wait_port, wait_until

MiB = 1024 * 1024
PROBLEM = "application/problem+json"


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    data_dir: Path
    issuer: OidcIssuer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=15.0)


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    yield from issuer_on_a_thread(("acme",))


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess, issuer: OidcIssuer
) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("process")
    port = free_port()
    path = write_config(
        folder / "edge.toml", mqtt_port=mosquitto.port, modbus_port=free_port(), devices=0, tenants=("acme",)
    )
    path.write_text(
        path.read_text().replace('id = "gw-test"', 'id = "gw-process"') + api_section(issuer.issuer, port)
    )
    log = folder / "gateway.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(path), "--log-level", "INFO"], stderr=sink
        )
    try:
        wait_port(port, 30)
        yield GatewayProcess(process, port, log, folder / "data", issuer)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def _post_streaming(port: int, path: str, size: int, *, chunked: bool) -> tuple[int, str, bytes, int]:
    """POST `size` bytes of body without a token, 1 MiB at a time, reading the answer as soon as one comes.

    Returns (status, content type, body, bytes of body sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()
    )
    chunk = b"x" * MiB
    piece = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
    sent = 0
    deadline = time.monotonic() + 60
    try:
        while sent < size and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5.0)
            if readable:
                break  # the server answered before taking the whole body
            if writable:
                sock.sendall(piece)
                sent += len(chunk)
        else:
            if chunked:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # it closed the connection after answering; the answer is in our receive buffer
    answer = http.client.HTTPResponse(sock)
    try:
        answer.begin()
        return answer.status, answer.getheader("content-type") or "", answer.read(), sent
    finally:
        answer.close()
        sock.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_unauthenticated_200_mb_post_is_refused_early_and_does_not_grow_the_gateway(
    gateway: GatewayProcess, chunked: bool
) -> None:
    before = gateway.rss()
    status, kind, body, sent = _post_streaming(gateway.port, "/v1/webhooks", 200 * MiB, chunked=chunked)
    grown = gateway.rss() - before
    print(
        f"\n200 MB POST ({'chunked' if chunked else 'content-length'}): {status} after {sent / MiB:.0f} MiB "
        f"sent; gateway RSS {before / MiB:.0f} -> {(before + grown) / MiB:.0f} MiB"
    )
    assert status == 413 and kind == PROBLEM, (status, body[:200])
    assert b"65536 bytes" in body
    assert sent <= 16 * MiB  # refused before the body, not after it
    assert grown < 16 * MiB
    with gateway.client() as http:
        assert http.get("/health").status_code == 200  # and it carries on


def test_bearer_tokens_in_the_query_never_reach_the_log(gateway: GatewayProcess) -> None:
    token = gateway.issuer.mint(tenant="acme", role="viewer")
    stream = gateway.url.replace("http://", "ws://") + "/v1/events/stream"
    url = f"{stream}?access_token={token}&type=org.edgegw.telemetry"
    with connect(url, open_timeout=10) as ws, pytest.raises(TimeoutError):
        ws.recv(timeout=0.3)  # accepted and streaming (nothing happens on this gateway)
    forged = token[:-8] + "AAAAAAAA"
    with connect(f"{stream}?access_token={forged}", open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with gateway.client() as http:
        assert http.get("/v1/devices", params={"access_token": token}).status_code == 401  # not a way in

    def stream_lines() -> list[str] | None:
        found = [line for line in gateway.log.read_text().splitlines() if "/v1/events/stream" in line]
        return found if len(found) >= 2 else None

    lines = wait_until(stream_lines, 10, "the server's lines about both streams")
    text = gateway.log.read_text()
    assert token.split(".")[2] not in text and forged.split(".")[2] not in text
    assert token.split(".")[1] not in text
    assert all("access_token=***" in line for line in lines), lines


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_configured_proxy(gateway: GatewayProcess) -> None:
    """No trusted proxies configured: a client cannot spread its failures over forged addresses."""
    with gateway.client("replayed-junk") as http:
        answers = [http.get("/v1/devices", headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(21)]
    assert [a.status_code for a in answers[:20]] == [401] * 20
    assert answers[20].status_code == 429 and "from 127.0.0.1" in answers[20].json()["detail"]


def test_an_unexpected_error_is_a_problem_500_that_names_nothing_inside(gateway: GatewayProcess) -> None:
    outbox = gateway.data_dir / "outbox.db"
    moved = outbox.with_name("outbox.db.away")
    token = gateway.issuer.mint(tenant="acme", role="viewer")
    with gateway.client(token) as http:
        assert http.get("/v1/sync").status_code == 200
        outbox.rename(moved)  # the file the sync view opens is gone (the gateway keeps its open handle)
        try:
            failed = http.get("/v1/sync")
        finally:
            moved.rename(outbox)
        assert failed.status_code == 500 and failed.headers["content-type"] == PROBLEM
        assert failed.json() == {
            "type": "about:blank",
            "title": "Internal Server Error",
            "status": 500,
            "detail": "an unexpected error; the gateway's log has the details",
            "instance": "/v1/sync",
        }
        assert http.get("/v1/sync").status_code == 200
    assert "no outbox at" in gateway.log.read_text()  # the operator gets the reason
