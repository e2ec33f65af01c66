"""Bearer tokens against the real issuer and a real gateway API: every bad token is refused with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from typer.testing import CliRunner

from edge.api.auth import OidcVerifier
from edge.api.problems import Problem
from edge.cli import app
from edge.config.models import OidcConfig
from tests.api_harness import ApiGateway, api_gateway
from tests.helpers import MosquittoProcess, free_port


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mosquitto: MosquittoProcess) -> Iterator[ApiGateway]:
    yield from api_gateway(tmp_path_factory.mktemp("auth"), mosquitto.port, free_port(), devices=0)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(api: ApiGateway, **over: object) -> dict[str, object]:
    now = int(time.time())
    claims = {"iss": api.issuer.issuer, "aud": "edge-gateway", "sub": "mallory", "iat": now, "exp": now + 300}
    return claims | {"tenant": "acme", "roles": ["admin"]} | over


def _unsigned(api: ApiGateway) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": api.issuer.signing_key.kid}
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(api)).encode())}."


def _hmac_with_public_key(api: ApiGateway) -> str:
    """The classic confusion attack: HS256 keyed with the issuer's public key, which anyone can download."""
    header = {"alg": "HS256", "typ": "JWT", "kid": api.issuer.signing_key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(api)).encode())}"
    secret = api.issuer.signing_key.as_pem(private=False)
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _signed_by_stranger(api: ApiGateway) -> str:
    stranger = RSAKey.generate_key(2048, parameters={"kid": api.issuer.signing_key.kid}, private=True)
    return jwt.encode({"alg": "RS256", "kid": stranger.kid}, _claims(api), stranger)


def _with_header(api: ApiGateway, name: str) -> str:
    header = {"alg": "RS256", "kid": api.issuer.signing_key.kid, name: "https://evil.example/keys"}
    return jwt.encode(header, _claims(api), api.issuer.signing_key)


BAD_TOKENS = {
    "alg none": (lambda api: _unsigned(api), 401, "algorithm 'none'"),
    "HS256 keyed with the public key": (lambda api: _hmac_with_public_key(api), 401, "algorithm 'HS256'"),
    "signed by another key with the issuer's kid": (lambda api: _signed_by_stranger(api), 401, "signature"),
    "jku header": (lambda api: _with_header(api, "jku"), 401, "'jku' refused"),
    "x5u header": (lambda api: _with_header(api, "x5u"), 401, "'x5u' refused"),
    "expired beyond the leeway": (lambda api: api.token("acme", ttl=-120), 401, "expired"),
    "not valid before in the future": (lambda api: api.token("acme", nbf_in=600), 401, "not yet valid"),
    "wrong audience": (lambda api: api.token("acme", aud="another-gateway"), 401, "aud"),
    "wrong issuer": (lambda api: api.token("acme", iss="https://evil.example"), 401, "iss"),
    "unknown key id": (lambda api: api.token("acme", kid="no-such-key"), 401, "unknown key id"),
    "not a JWT": (lambda api: "not-a-token", 401, "malformed"),
    "unknown role": (lambda api: api.token("acme", "superuser"), 403, "no gateway role"),
    "tenant not served here": (lambda api: api.token("initech", "viewer"), 403, "not served"),
    "viewer without a tenant": (lambda api: api.token(None, "viewer"), 403, "names no tenant"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_refused_with_the_reason(api: ApiGateway, case: str) -> None:
    make, status, reason = BAD_TOKENS[case]
    with api.client(make(api)) as http:
        answer = http.get("/v1/devices")
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert reason in answer.json()["detail"]


def test_good_tokens_pass_with_a_small_clock_skew(api: ApiGateway) -> None:
    for token in (api.token("acme"), api.token("acme", ttl=-10), api.token("acme", nbf_in=10)):  # leeway 30 s
        with api.client(token) as http:
            assert http.get("/v1/devices").status_code == 200


def test_a_rotated_key_is_fetched_once_and_unknown_kids_are_rate_limited(api: ApiGateway) -> None:
    old = api.token("acme")
    with api.client(old) as http:
        assert http.get("/v1/devices").status_code == 200
    fetched = api.issuer.stats.jwks
    time.sleep(1.05)  # past jwks_refresh_min (tests/api_harness.py)
    api.issuer.rotate()  # the old key stays published
    with api.client(api.token("acme")) as http:
        assert http.get("/v1/devices").status_code == 200
    assert api.issuer.stats.jwks == fetched + 1
    junk = api.token("acme", kid="junk")
    with api.client(
        junk
    ) as http:  # junk kids right after a refresh do not make the gateway hammer the issuer
        assert [http.get("/v1/devices").status_code for _ in range(5)] == [401] * 5
    assert api.issuer.stats.jwks == fetched + 1
    with api.client(old) as http:
        assert http.get("/v1/devices").status_code == 200


def test_keys_are_not_trusted_past_their_cache_time_when_the_issuer_is_down(api: ApiGateway) -> None:
    config = OidcConfig(issuer=api.issuer.issuer, audience="edge-gateway", allow_http=True, jwks_cache=0.2)
    verifier = OidcVerifier(config)
    token = api.token("acme")

    async def verify() -> dict[str, object]:
        return await verifier.verify(token)

    try:
        assert api.loop.run(verify())["tenant"] == "acme"
        api.issuer.down = True
        assert api.loop.run(verify())["tenant"] == "acme"  # within the cache time: cached keys
        time.sleep(0.25)
        with pytest.raises(Problem) as refused:
            api.loop.run(verify())
        assert refused.value.status == 503 and "cannot be reached" in refused.value.detail
    finally:
        api.issuer.down = False
        api.loop.run(verifier.aclose())
    assert api.loop.run(OidcVerifier(config).verify(token))["tenant"] == "acme"  # back once it answers


@pytest.mark.parametrize(
    ("settings", "claims", "expected"),
    [
        (  # Keycloak: realm roles nested under realm_access, IdP role names mapped
            {"tenant_claim": "tenant", "role_claim": "realm_access.roles",
             "role_map": {"edge-operator": "operator", "edge-viewer": "viewer"}},
            {"tenant": "acme", "realm_access": {"roles": ["offline_access", "edge-viewer", "edge-operator"]}},
            ("acme", "operator"),
        ),
        (  # Auth0: namespaced custom claims whose names contain dots
            {"tenant_claim": "https://edge.example.com/tenant", "role_claim": "https://edge.example.com/roles"},
            {"https://edge.example.com/tenant": "globex", "https://edge.example.com/roles": ["admin"]},
            ("globex", "admin"),
        ),
        (  # Entra ID: app roles in `roles`, the tenant in a directory extension claim
            {"tenant_claim": "extn.edgeTenant", "role_claim": "roles", "role_map": {"Edge.Viewer": "viewer"}},
            {"extn.edgeTenant": "acme", "roles": ["Edge.Viewer"]},
            ("acme", "viewer"),
        ),
    ],
)  # fmt: skip
def test_claims_map_to_tenant_and_role_per_identity_provider(
    settings: dict[str, object], claims: dict[str, object], expected: tuple[str, str]
) -> None:
    config = OidcConfig.model_validate({"issuer": "https://idp.example", "audience": "edge"} | settings)
    who = OidcVerifier(config).principal(claims | {"sub": "svc"})
    assert (who.tenant, who.role, who.subject) == (*expected, "svc")


def test_an_enabled_api_needs_an_https_issuer_unless_told_otherwise() -> None:
    from pydantic import ValidationError

    from edge.config.models import ApiConfig

    assert ApiConfig(enabled=True).oidc is None  # local accounts sign in (tests/api/test_api_sessions.py)
    with pytest.raises(ValidationError, match="must be an https:// URL"):
        OidcConfig(issuer="http://idp.example", audience="edge")
    with pytest.raises(ValidationError, match="algorithms"):
        OidcConfig.model_validate(
            {"issuer": "https://idp.example", "audience": "edge", "algorithms": ["HS256"]}
        )


def test_the_cli_prints_a_token_from_the_test_issuer_that_the_api_accepts(api: ApiGateway) -> None:
    # typer's runner calls the real command in this process (a subprocess costs seconds of imports)
    edge = ["simulate", "oidc", "token", "--issuer", api.issuer.issuer]
    printed = CliRunner().invoke(app, [*edge, "--tenant", "acme", "--role", "operator"])
    assert printed.exit_code == 0, printed.output
    with api.client(printed.stdout.strip()) as http:
        assert http.get("/v1/devices").status_code == 200
        assert http.get("/v1/tenants").status_code == 403  # an operator, not an admin
    refused = CliRunner().invoke(app, [*edge, "--tenant", "initech"])
    assert refused.exit_code == 1 and "refused client 'initech-viewer'" in refused.output


def test_a_token_once_checked_is_still_refused_once_expired_or_its_key_is_gone(api: ApiGateway) -> None:
    """Signatures already checked are remembered (a client sends the same token with every request), but
    never past what a fresh check would refuse: the token's expiry, and the keys the issuer publishes now."""
    config = OidcConfig(
        issuer=api.issuer.issuer, audience="edge-gateway", allow_http=True, leeway=0, jwks_refresh_min=0
    )
    verifier = OidcVerifier(config)
    short, old = api.token("acme", ttl=1), api.token("acme")

    async def verify(token: str) -> dict[str, object]:
        return await verifier.verify(token)

    try:
        assert api.loop.run(verify(short))["tenant"] == "acme"
        assert api.loop.run(verify(old))["tenant"] == "acme"
        assert api.loop.run(verify(old))["tenant"] == "acme"  # from memory: the same keys, not expired
        time.sleep(2.1)
        with pytest.raises(Problem) as expired:
            api.loop.run(verify(short))
        assert expired.value.status == 401 and "expired" in expired.value.detail
        api.issuer.rotate(drop_old=True)  # the key that signed `old` is withdrawn
        assert api.loop.run(verify(api.token("acme")))["tenant"] == "acme"  # new kid: keys fetched again
        with pytest.raises(Problem) as withdrawn:
            api.loop.run(verify(old))
        assert withdrawn.value.status == 401 and "unknown key id" in withdrawn.value.detail
    finally:
        api.loop.run(verifier.aclose())
