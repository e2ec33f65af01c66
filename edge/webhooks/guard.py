"""The SSRF guard: a webhook destination must be a globally routable unicast address, or in the allow-list.

Globally routable is the standard library's `is_global` (IANA's special-purpose registries: it refuses
loopback, private, link-local, unique-local, documentation and the shared 100.64.0.0/10, where cloud
metadata services live), less what Python 3.11 still calls global: multicast, the reserved `::/8`, the
deprecated site-local `fec0::/10` and the local-use NAT64 prefix `64:ff9b:1::/48`. An IPv6 address that
carries an IPv4 one is judged by both: IPv4-mapped `::ffff:a.b.c.d` is that IPv4 address, and 6to4
(`2002::/16`), Teredo (`2001::/32`, server and client) and NAT64 (`64:ff9b::/96`, in Python's reserved
`::/8` but the way an IPv6-only site reaches IPv4) reach the IPv4 address inside, which must be routable too.

The check runs on the addresses the host name resolves to, when the connection is made (`GuardedBackend`),
so a name that resolves to an internal address, or that changes to one after the subscription was created
(DNS rebinding), is refused too. The URL string is checked as well, at `edge webhook add`, for an early and
clear error. Networks in `allow` (configuration `[webhooks] allow_networks`) are let through.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

import httpcore
import httpx

from edge.sdk.errors import EdgeError

__all__ = ["DestinationPolicy", "DestinationRefused", "GuardedTransport", "Resolver", "embedded_ipv4"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]  # host, port -> addresses (a seam: tests need no DNS)

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix, IPv4 in the last 32 bits
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215; global to Python before 3.12.4

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
        if self._allowed(address):
            return None
        why = None if address in _NAT64 else _not_routable(address)  # NAT64: judged by its IPv4 address
        if why is not None:
            return f"{address} is {why} (allow it with [webhooks] allow_networks)"
        for inner in embedded_ipv4(address):
            why = _not_routable(inner)
            if why is not None and not self._allowed(inner):
                return f"{address} leads to {inner}, {why} (allow it with [webhooks] allow_networks)"
        return None

    def _allowed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow)

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


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address delivers to: 6to4, Teredo (server, client), NAT64, IPv4-mapped."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return [inner for inner in found if inner is not None]


def _not_routable(address: IPAddress) -> str | None:
    """What keeps `address` from being a globally routable unicast address, or None."""
    for kind, hit in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("an unspecified address", address.is_unspecified),
        ("a multicast address", address.is_multicast),
        ("a site-local address", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved or address in _LOCAL_NAT64),
    ):
        if hit:
            return kind
    return None if address.is_global else "not a globally routable address"


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host, refuses forbidden addresses, and connects to a vetted address only."""

    def __init__(self, policy: DestinationPolicy, resolver: Resolver | None = None) -> None:
        self._policy = policy
        self._resolve = resolver or _getaddrinfo
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            resolved = await asyncio.wait_for(self._resolve(host, port), timeout)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = _unique(ipaddress.ip_address(address) for address in resolved)
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

    def __init__(
        self, policy: DestinationPolicy, *, max_connections: int = 2, resolver: Resolver | None = None
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections, network_backend=GuardedBackend(policy, resolver)
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
