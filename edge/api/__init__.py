"""The gateway's REST API, WebSocket and OIDC identity (docs/api.md).

Public: `ApiServer` (run by the gateway), `build_app`, `openapi_document`, `Principal`, `OidcVerifier`.
"""

from __future__ import annotations

from edge.api.app import ApiError, ApiServer, build_app, openapi_document
from edge.api.auth import OidcVerifier, Principal

__all__ = ["ApiError", "ApiServer", "OidcVerifier", "Principal", "build_app", "openapi_document"]
