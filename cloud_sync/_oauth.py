"""Authlib's OAuth2 client for httpx, imported once and quietly.

Authlib 1.9 prefers `httpx2` and warns (at import) that its plain-httpx fallback is deprecated. The gateway
uses httpx 0.28 (pyproject pins it), which Authlib 1.9 still fully supports; the pin `authlib<1.10` keeps it
so until the project moves to httpx2. The warning is silenced here, at the one import site, instead of
appearing in every gateway log.
"""

from __future__ import annotations

import warnings

import authlib.deprecate  # noqa: F401  (installs Authlib's own filter first, so the one below takes precedence)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

__all__ = ["AsyncOAuth2Client", "OAuthError"]
