"""HTTPS on the API with the certificate `edge certs create` writes; the session cookie is Secure there."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edge.api import ApiError
from edge.cli import app
from edge.gateway import Gateway
from tests.api_harness import LocalGateway, local_gateway
from tests.e2e import load, write_config
from tests.helpers import MosquittoProcess, free_port

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("certs")
    made = CliRunner().invoke(
        app,
        [
            "certs",
            "create",
            "--out",
            str(out),
            "--uri",
            "urn:test:edge",
            "--name",
            "gw",
            "--dns",
            "localhost",
        ],
    )
    assert made.exit_code == 0, made.output
    return out


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess, certs: Path
) -> Iterator[LocalGateway]:
    settings = f'tls_cert = "{certs / "certificate.pem"}"\ntls_key = "{certs / "private_key.pem"}"'
    yield from local_gateway(
        tmp_path_factory.mktemp("tls"),
        mosquitto.port,
        free_port(),
        (("bob", PASSWORD, "viewer", "acme"),),
        devices=0,
        api_settings=settings,
    )


def test_the_api_serves_https_with_the_gateways_certificate(tls: LocalGateway, certs: Path) -> None:
    assert tls.base_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=certs / "certificate.pem")
    with httpx.Client(base_url=tls.base_url.replace("127.0.0.1", "localhost"), verify=trust) as http:
        assert http.get("/health").json()["status"] == "ok"
        signed = http.post("/v1/session", json={"username": "bob", "password": PASSWORD})
        assert signed.status_code == 200
        assert "secure" in signed.headers["set-cookie"].lower()
    with httpx.Client(base_url=tls.base_url) as untrusting, pytest.raises(httpx.ConnectError):
        untrusting.get("/health")  # a client that does not trust the certificate refuses it
    plain = httpx.Client(base_url=tls.base_url.replace("https://", "http://"))
    with plain, pytest.raises(httpx.HTTPError):
        plain.get("/health")  # no plain HTTP on the TLS port


async def test_a_key_that_does_not_load_is_a_clear_error(tmp_path: Path, certs: Path) -> None:
    path = write_config(tmp_path / "edge.toml", mqtt_port=free_port(), modbus_port=free_port(), devices=0)
    (tmp_path / "broken.pem").write_text("not a key")
    section = f'\n[api]\nenabled = true\ntls_cert = "{certs / "certificate.pem"}"\ntls_key = "broken.pem"\n'
    path.write_text(path.read_text() + section)
    with pytest.raises(ApiError, match=r"tls_cert .*certificate.pem / tls_key .*broken.pem: cannot be used"):
        Gateway(*load(path))
