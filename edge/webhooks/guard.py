"""The SSRF guard: webhook destinations on loopback, link-local, private or unique-local addresses are refused.

The check runs on the addresses the host name resolves to, when the connection is made (`GuardedBackend`),
so a name that resolves to an internal address, or that changes to one after the subscription was created
(DNS rebinding), is refused too. The URL string is checked as well, at `edge webhook add`, for an early and
clear error. Networks in `allow` (configuration `[webhooks] allow_networks`) are let through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx

from edge.sdk.errors import EdgeError

__all__ = ["DestinationPolicy", "DestinationRefused", "GuardedTransport"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_RESPONSE_BYTES = 64 * 1024  # a receiver's answer is only logged; never read more than this


class DestinationRefused(EdgeError):
    """The webhook destination resolves to an address the policy refuses."""


class DestinationPolicy:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allow)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be called, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in network for network in self.allow):
            return None
        for kind, hit in (
            ("loopback", address.is_loopback),
            ("link-local", address.is_link_local),
            ("private", address.is_private),
            ("unspecified", address.is_unspecified),
            ("multicast", address.is_multicast),
            ("reserved", address.is_reserved),
        ):
            if hit:
                return f"{address} is a {kind} address (allow it with [webhooks] allow_networks)"
        return None

    def check_url(self, url: str) -> str:
        """Validate a destination URL; returns it, or raises ValueError with the reason."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"webhook URL {url!r} is not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"webhook URL {url!r}: the scheme must be http or https")
        if not parsed.host:
            raise ValueError(f"webhook URL {url!r} has no host")
        if parsed.userinfo:
            raise ValueError(f"webhook URL {url!r}: credentials in the URL would be stored and shown")
        try:
            literal = ipaddress.ip_address(parsed.host)
        except ValueError:
            return url  # a name: checked on what it resolves to, at every connection
        why = self.refusal(literal)
        if why is not None:
            raise ValueError(f"webhook URL {url!r} refused: {why}")
        return url


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host, refuses forbidden addresses, and connects to a vetted address only."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = _unique(ipaddress.ip_address(info[4][0]) for info in infos)
        refusals = [why for why in map(self._policy.refusal, addresses) if why is not None]
        if refusals:  # one internal answer is enough to refuse: the name is not a public destination
            raise DestinationRefused(f"destination {host} refused: {refusals[0]}")
        last: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"{host} resolved to no address")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool that connects through `GuardedBackend`."""

    def __init__(self, policy: DestinationPolicy, *, max_connections: int = 2) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections, network_backend=GuardedBackend(policy)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self._pool.handle_async_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=request.url.raw_scheme,
                    host=request.url.raw_host,
                    port=request.url.port,
                    target=request.url.raw_path,
                ),
                headers=request.headers.raw,
                content=body,
                extensions=request.extensions,
            )
        )
        content = bytearray()
        try:
            async for chunk in response.aiter_stream():
                content += chunk[: _MAX_RESPONSE_BYTES - len(content)]
                if len(content) >= _MAX_RESPONSE_BYTES:
                    break
        finally:
            await response.aclose()
        return httpx.Response(response.status, headers=response.headers, content=bytes(content))

    async def aclose(self) -> None:
        await self._pool.aclose()


def _unique(addresses: Iterable[IPAddress]) -> Sequence[IPAddress]:
    return list(dict.fromkeys(addresses))
