"""The gateway's REST API, WebSocket, console sessions and metrics (docs/api.md, docs/console.md).

Public: `ApiServer` (run by the gateway), `ApiServices` (what the gateway hands it), `build_app`, `openapi_document`, `Principal`, `OidcVerifier`.
They load on first use (PEP 562): a command that only needs `edge.api.accounts` (`edge user`) does not pay for
FastAPI and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.api.app import ApiError, ApiServer, build_app, openapi_document
    from edge.api.auth import OidcVerifier, Principal
    from edge.api.services import ApiServices

_HOMES = {
    "ApiError": "edge.api.app",
    "ApiServer": "edge.api.app",
    "build_app": "edge.api.app",
    "openapi_document": "edge.api.app",
    "OidcVerifier": "edge.api.auth",
    "Principal": "edge.api.auth",
    "ApiServices": "edge.api.services",
}

__all__ = [
    "ApiError",
    "ApiServer",
    "ApiServices",
    "OidcVerifier",
    "Principal",
    "build_app",
    "openapi_document",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'edge.api' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
