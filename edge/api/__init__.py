"""The gateway's REST API, WebSocket and OIDC identity (docs/api.md).

Public: `ApiServer` (run by the gateway), `ApiServices` (what the gateway hands it), `build_app`, `openapi_document`, `Principal`, `OidcVerifier`.
"""

from __future__ import annotations

from edge.api.app import ApiError, ApiServer, build_app, openapi_document
from edge.api.auth import OidcVerifier, Principal
from edge.api.services import ApiServices

__all__ = [
    "ApiError",
    "ApiServer",
    "ApiServices",
    "OidcVerifier",
    "Principal",
    "build_app",
    "openapi_document",
]
