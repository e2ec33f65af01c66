"""One tenant's connection to its platform: the gateway connects out (works behind NAT and firewalls).

Long-poll (cloud_sync/README.md, "Downlink"): `GET {url}/v1/downlink/{tenant}?gateway=&after=&wait=`, the
platform holds the request up to `wait` seconds and answers 200 with the messages after `after`, or 204. Each
message is handed to the dispatcher in platform order, then the cursor moves (persisted), and the next poll
acknowledges it. Failures (connection, timeout, 5xx, 429) back off, capped, with jitter (`edge.sdk.backoff`);
the loss and the return of the link are logged once each. `entitlements()` asks the entitlement endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from edge.config.models import CloudConfig, TenantCloudConfig
from edge.downlink.ledger import DownlinkLedger
from edge.downlink.oauth import AsyncOAuth2Client, OAuthError
from edge.sdk.backoff import Backoff

__all__ = ["LinkDown", "LinkStats", "TenantLink"]

log = logging.getLogger(__name__)

USER_AGENT = "edge-gateway-downlink/0.1"
MAX_MESSAGES = 100  # per poll; the platform sends the rest on the next

# (tenant, JWS) -> None: verify and act on one message; never raises for a bad message (it reports it)
Dispatch = Callable[[str, str], Awaitable[None]]


class LinkDown(Exception):
    """The platform could not be reached or refused us; `reason` says how."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class LinkStats:
    connected: bool = False
    since: float | None = None  # wall time the link last connected or was lost (None: no attempt ended yet)
    polls: int = 0
    messages: int = 0
    failures: int = 0
    last_error: str | None = None
    last_contact: float | None = None  # wall time of the last answer from the platform
    last_message: str | None = None  # id of the last message (set by the dispatcher, which reads it)
    last_message_at: float | None = None

    def message(self, jti: str | None) -> None:
        self.last_message, self.last_message_at = jti, time.time()


class TenantLink:
    def __init__(
        self,
        tenant: str,
        cloud: TenantCloudConfig,
        settings: CloudConfig,
        gateway_id: str,
        client_secret: str,
        ledger: DownlinkLedger,
    ) -> None:
        self.tenant = tenant
        self._base = cloud.url.rstrip("/")
        self._settings = settings
        self._gateway = gateway_id
        self._ledger = ledger
        self._client = AsyncOAuth2Client(
            client_id=cloud.client_id,
            client_secret=client_secret,
            scope=cloud.scope,
            token_endpoint=cloud.token_url,
            grant_type="client_credentials",
            leeway=30,
            timeout=httpx.Timeout(settings.poll_wait + 15.0, connect=5.0),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "X-Edge-Gateway": gateway_id},
        )
        self._backoff = Backoff(settings.backoff_base, settings.backoff_cap)
        self.stats = LinkStats()

    async def close(self) -> None:
        await self._client.aclose()

    async def run(self, dispatch: Dispatch) -> None:
        """Poll until cancelled; every message in order, each once per cursor position."""
        while True:
            try:
                messages = await self._poll()
            except LinkDown as exc:
                self._lost(exc.reason)
                delay = self._backoff.next_delay()
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, self._settings.backoff_cap))
                await asyncio.sleep(delay)
                continue
            self._restored()
            for seq, token in messages:
                await dispatch(self.tenant, token)
                self._ledger.move_cursor(self.tenant, seq)
                self.stats.messages += 1

    async def _poll(self) -> list[tuple[int, str]]:
        after = self._ledger.cursor(self.tenant)
        params: dict[str, str | int | float] = {
            "gateway": self._gateway,
            "after": after,
            "wait": self._settings.poll_wait,
            "max": MAX_MESSAGES,
        }
        response = await self._get(f"{self._base}/v1/downlink/{self.tenant}", params)
        self.stats.polls += 1
        if response.status_code == 204:
            return []
        body = _json_object(response)
        raw = body.get("messages")
        if not isinstance(raw, list):
            raise LinkDown("downlink answer without a 'messages' list")
        out = []
        for item in raw:
            if not isinstance(item, dict):
                continue
            seq, token = item.get("seq"), item.get("jws")
            if isinstance(seq, int) and seq > after and isinstance(token, str):
                out.append((seq, token))
        return sorted(out)

    async def entitlements(self) -> str:
        """The platform's signed entitlement answer (a JWS) for this tenant. Raises LinkDown."""
        response = await self._get(f"{self._base}/v1/entitlements/{self.tenant}", {"gateway": self._gateway})
        token = _json_object(response).get("jws")
        if not isinstance(token, str):
            raise LinkDown("entitlement answer without a 'jws'")
        return token

    async def _get(self, url: str, params: dict[str, str | int | float]) -> httpx.Response:
        for attempt in (1, 2):
            try:
                await self._token(force=attempt == 2)
                response: httpx.Response = await self._client.get(url, params=params)
            except OAuthError as exc:
                raise LinkDown(f"token refused: {exc.error}") from None
            except httpx.HTTPError as exc:
                raise LinkDown(f"{type(exc).__name__}: {exc}") from None
            if response.status_code == 401 and attempt == 1:
                continue  # a revoked or expired token: fetch a new one, once
            if response.status_code in (200, 204):
                self.stats.last_contact = time.time()
                return response
            retry_after = _retry_after(response)
            raise LinkDown(f"HTTP {response.status_code} from {url}", retry_after)
        raise LinkDown("HTTP 401: credentials refused after a token refresh")

    async def _token(self, *, force: bool) -> None:
        client = self._client
        try:
            if force or not client.token:
                await client.fetch_token()
            elif client.token.is_expired(leeway=client.leeway):
                await client.ensure_active_token(client.token)
        except httpx.HTTPError as exc:
            raise LinkDown(f"token endpoint: {type(exc).__name__}: {exc}") from None

    def _lost(self, reason: str) -> None:
        self.stats.failures += 1
        self.stats.last_error = reason
        if self.stats.connected or (self.stats.polls == 0 and self.stats.failures == 1):
            log.warning("downlink of tenant %s lost: %s (reconnecting with backoff)", self.tenant, reason)
        if self.stats.connected or self.stats.since is None:
            self.stats.since = time.time()
        self.stats.connected = False

    def _restored(self) -> None:
        self._backoff.reset()
        if not self.stats.connected:
            log.info("downlink of tenant %s connected to %s", self.tenant, self._base)
            self.stats.since = time.time()
        self.stats.connected = True


def _json_object(response: httpx.Response) -> dict[str, object]:
    try:
        body = response.json()
    except ValueError:
        raise LinkDown("the platform's answer is not JSON") from None
    if not isinstance(body, dict):
        raise LinkDown("the platform's answer is not a JSON object")
    return body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None
