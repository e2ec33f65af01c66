"""A webhook receiver with fault injection, for tests, the demo and the benchmark.

An independent implementation: it imports nothing from `edge`, and checks Standard Webhooks signatures on its
own (HMAC-SHA256 of "id.timestamp.body", `v1,<base64>`, timestamps within 5 minutes), so the gateway and the
receiver cannot be wrong in the same way. A small HTTP/1.1 server on asyncio and h11, keep-alive included.

Faults, changeable while it runs (`faults`): answer with a fixed `status` (e.g. 500, 410, or 307 with a
`location`), fail the first `fail_first` requests of every message id, `delay` seconds before answering, or
`stall` (never answer). Every request is recorded with its headers, body and whether the signature verified.

    python -m simulators.webhook_receiver --port 9000 --secret whsec_... [--stall | --status 500]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field

import h11

TOLERANCE = 300  # seconds either side of our clock
MAX_BODY = 4 << 20


@dataclass
class Faults:
    status: int | None = None  # answer every request with this status
    location: str = "http://example.invalid/elsewhere"  # for 3xx answers
    fail_first: int = 0  # answer 503 to the first n attempts of each message id
    delay: float = 0.0  # seconds before answering
    stall: bool = False  # never answer
    retry_after: float | None = None  # sent with every non-2xx answer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    at: float  # monotonic


@dataclass
class WebhookReceiver:
    secret: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    faults: Faults = field(default_factory=Faults)
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _seen: dict[str, int] = field(default_factory=dict)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._closing.set()  # stalled answers end now
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def verify(self, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
        """Standard Webhooks verification, written from the spec."""
        if self.secret is None:
            return False
        try:
            msg_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
            signatures = headers["webhook-signature"].split()
        except (KeyError, ValueError):
            return False
        if abs((now or time.time()) - stamp) > TOLERANCE:
            return False
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        expected = base64.b64encode(
            hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        return any(
            version == "v1" and hmac.compare_digest(sig, expected)
            for version, _, sig in (s.partition(",") for s in signatures)
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _read(conn, reader)
                if request is None:
                    return
                head, body = request
                status, extra = await self._answer(head, body)
                if status is None:
                    with contextlib.suppress(TimeoutError):  # stalled: the client's timeout ends it
                        await asyncio.wait_for(self._closing.wait(), 3600)
                    return
                writer.write(
                    conn.send(h11.Response(status_code=status, headers=[(b"content-length", b"0"), *extra]))
                    or b""
                )
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, h11.LocalProtocolError):
            return
        finally:
            writer.close()

    async def _answer(self, head: h11.Request, body: bytes) -> tuple[int | None, list[tuple[bytes, bytes]]]:
        headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        faults = self.faults
        if faults.stall:
            return None, []
        if faults.delay:
            await asyncio.sleep(faults.delay)
        msg_id = headers.get("webhook-id", "")
        self._seen[msg_id] = self._seen.get(msg_id, 0) + 1
        extra: list[tuple[bytes, bytes]] = []
        if faults.status is not None:
            status = faults.status
            if 300 <= status < 400:
                extra.append((b"location", faults.location.encode()))
        elif self._seen[msg_id] <= faults.fail_first:
            status = 503
        else:
            status = 204
        verified = self.verify(headers, body)
        if status == 204 and self.secret is not None and not verified:
            status = 401
        if status >= 300 and faults.retry_after is not None:
            extra.append((b"retry-after", f"{faults.retry_after:g}".encode()))
        self.received.append(
            Received(head.target.decode(), headers, body, status, verified, time.monotonic())
        )
        return status, extra


async def _read(conn: h11.Connection, reader: asyncio.StreamReader) -> tuple[h11.Request, bytes] | None:
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(1 << 16)
            conn.receive_data(data)
            if not data and head is None:
                return None
            continue
        if isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise ConnectionError("body too large")
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return head, bytes(body)
        else:
            return None


async def _main(port: int, secret: str | None, faults: Faults) -> None:
    receiver = WebhookReceiver(secret, port=port, faults=faults)
    await receiver.start()
    print(f"webhook receiver on {receiver.url}", flush=True)
    count = 0
    while True:
        await asyncio.sleep(5)
        if len(receiver.received) != count:
            count = len(receiver.received)
            print(f"{count} requests, {len(receiver.accepted())} accepted", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", help="The subscription's whsec_ secret, to verify signatures.")
    parser.add_argument("--stall", action="store_true", help="Accept connections, never answer.")
    parser.add_argument("--status", type=int, help="Answer every request with this status.")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, args.secret, Faults(status=args.status, stall=args.stall)))


if __name__ == "__main__":
    main()
