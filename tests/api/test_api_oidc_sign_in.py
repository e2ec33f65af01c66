"""Console sign-in at the OIDC issuer: authorization code + PKCE against the test issuer, followed by hand
with httpx so each step is checked (the browser does the same in tests/console)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.api_harness import ApiGateway, api_gateway
from tests.helpers import MosquittoProcess, free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_gateway(
        tmp_path_factory.mktemp("oidc-sign-in"),
        mosquitto.port,
        free_port(),
        devices=0,
        oidc_settings='client_id = "edge-console"',
    )


def _to_issuer(api: ApiGateway, http: httpx.Client) -> dict[str, str]:
    """Start a sign-in; returns the authorization request's query (the browser would now be at the issuer)."""
    start = http.get(api.base_url + "/v1/session/oidc/start")
    assert start.status_code == 303
    url = urlsplit(start.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == api.issuer.issuer and url.path == "/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["response_type"] == "code" and query["client_id"] == "edge-console"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["redirect_uri"] == api.base_url + "/v1/session/oidc/callback"
    return query


def _approve(http: httpx.Client, api: ApiGateway, query: dict[str, str], identity: str) -> str:
    """The issuer's sign-in page answered: returns the redirect back to the gateway (with code and state)."""
    page = http.get(api.issuer.issuer + "/authorize", params=query)
    assert page.status_code == 200 and 'name="identity"' in page.text
    form = {k: query[k] for k in ("client_id", "redirect_uri", "code_challenge", "state")}
    answer = http.post(
        api.issuer.issuer + "/authorize", data=form | {"identity": identity, "subject": "maria"}
    )
    assert answer.status_code == 303
    return answer.headers["location"]


def test_a_person_signs_in_at_the_issuer_and_gets_a_session_with_the_tokens_caller(api: ApiGateway) -> None:
    with httpx.Client(timeout=10) as http:
        assert http.get(api.base_url + "/v1/session/methods").json() == {"local": False, "oidc": True}
        query = _to_issuer(api, http)
        back = _approve(http, api, query, "acme:operator")
        done = http.get(back)
        assert done.status_code == 303 and done.headers["location"] == "/console/"
        cookie = done.headers["set-cookie"].lower()
        assert "edge_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        me = http.get(api.base_url + "/v1/session").json()
        assert (me["role"], me["tenant"], me["user"]) == ("operator", "acme", "maria")
        assert http.get(api.base_url + "/v1/devices", params={"tenant": "globex"}).status_code == 403
        assert http.get(back).status_code == 401  # a code and its state are used once


def test_a_callback_in_another_browser_or_with_a_wrong_verifier_fails(api: ApiGateway) -> None:
    with httpx.Client(timeout=10) as victim, httpx.Client(timeout=10) as attacker:
        query = _to_issuer(api, attacker)
        back = _approve(attacker, api, query, "globex:viewer")
        refused = victim.get(back)  # the attacker's code pushed to another browser: no state cookie there
        assert refused.status_code == 401 and "another browser" in refused.json()["detail"]
        assert "edge_session" not in victim.cookies
    with httpx.Client(timeout=10) as http:  # the issuer refuses a code exchanged without the right verifier
        query = _to_issuer(api, http)
        code = parse_qs(urlsplit(_approve(http, api, query, "acme:viewer")).query)["code"][0]
        wrong = base64.urlsafe_b64encode(hashlib.sha256(b"guess").digest()).rstrip(b"=").decode()
        exchanged = http.post(
            api.issuer.issuer + "/token",
            data={"grant_type": "authorization_code", "code": code, "client_id": "edge-console",
                  "redirect_uri": query["redirect_uri"], "code_verifier": wrong},
        )  # fmt: skip
        assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant"
