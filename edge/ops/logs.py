"""Structured logs: one line per record as text, key=value or JSON, with tenant and device bound, secrets hidden.

- The tenant comes from `edge.sdk.tenancy` (`TenantLogFilter` reads it), the device from `device_scope` here, which the
  kernel sets around each device's poller; outside them the field is `-`.
- Every secret the gateway knows (`edge.config.secrets.known_secrets`) is replaced by `***` in the finished line,
  message, arguments and traceback alike, so no code path can print one by mistake. So are credentials in URLs
  (`?access_token=`, `&token=`, `client_secret=`...) and bearer tokens, which no configuration names: a browser
  passes its token to the live stream in the query, and the HTTP server logs request paths.
- The level changes at run time: SIGUSR1 switches to DEBUG, SIGUSR2 back to the level the gateway started with
  (`systemctl kill -s USR1 edge-gateway`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import orjson

from edge.config.secrets import known_secrets
from edge.sdk.tenancy import maybe_tenant

__all__ = [
    "LogFormat",
    "configure",
    "current_device",
    "device_scope",
    "install_level_signals",
    "redact",
]

LogFormat = Literal["text", "kv", "json"]
REDACTED = "***"

_device: ContextVar[str | None] = ContextVar("edge_device", default=None)
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:access_token|id_token|refresh_token|token|client_secret|secret|password|api_key|apikey"
    r"|sig|signature)=)[^&;#\s\"']+"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[\w.~+/-]{20,}=*")  # JWTs and opaque tokens, not "Bearer error=..."


@contextmanager
def device_scope(name: str) -> Iterator[None]:
    token = _device.set(name)
    try:
        yield
    finally:
        _device.reset(token)


def current_device() -> str | None:
    return _device.get()


def redact(text: str) -> str:
    for secret in sorted(known_secrets(), key=len, reverse=True):  # longest first: no partial leftovers
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", text)
    return _BEARER.sub(rf"\g<1>{REDACTED}", text)


class TenantLogFilter(logging.Filter):
    """Binds the current tenant into every log record as `record.tenant` ('-' outside a tenant)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = maybe_tenant()
        record.tenant = ctx.tenant_id if ctx else "-"
        return True


class _BindFilter(TenantLogFilter):
    def filter(self, record: logging.LogRecord) -> bool:
        super().filter(record)
        record.device = _device.get() or "-"
        return True


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self._render(record))

    def _render(self, record: logging.LogRecord) -> str:
        return super().format(record)


class _KeyValue(_Redacting):
    """logfmt: `time=... level=info tenant=acme device=inv-01 logger=edge.devices.polling msg="..."`."""

    def _render(self, record: logging.LogRecord) -> str:
        fields = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "tenant": getattr(record, "tenant", "-"),
            "device": getattr(record, "device", "-"),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_kv_value(v)}" for k, v in fields.items())


def _kv_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\n\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Json(_Redacting):
    def _render(self, record: logging.LogRecord) -> str:
        body = {
            "time": record.created,
            "level": record.levelname.lower(),
            "tenant": getattr(record, "tenant", "-"),
            "device": getattr(record, "device", "-"),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            body["error"] = self.formatException(record.exc_info)
        return orjson.dumps(body).decode()


_TEXT = "%(asctime)s %(levelname)-7s [%(tenant)s/%(device)s] %(name)s: %(message)s"


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Send every log record to stderr (the journal under systemd) in `fmt`, at `level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_BindFilter())
    formatter: logging.Formatter = {"kv": _KeyValue, "json": _Json}.get(fmt, _Redacting)(_TEXT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def install_level_signals(loop: asyncio.AbstractEventLoop) -> None:
    """SIGUSR1: DEBUG; SIGUSR2: back to the level in force now."""
    root = logging.getLogger()
    initial = root.level

    def switch(level: int) -> None:
        root.setLevel(level)
        logging.getLogger(__name__).warning("log level is now %s", logging.getLevelName(level))

    loop.add_signal_handler(signal.SIGUSR1, switch, logging.DEBUG)
    loop.add_signal_handler(signal.SIGUSR2, switch, initial)
