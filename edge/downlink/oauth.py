"""The downlink's OAuth2 client (client credentials, as the uplink's): Authlib's httpx client, imported quietly.

Authlib 1.9 warns at import that its plain-httpx integration is deprecated in favour of httpx2; the gateway
pins httpx 0.28 and `authlib<1.10` (pyproject), which still support it fully. The kernel cannot import the
cloud_sync plug-in's own import site, so this is the kernel's one.
"""

from __future__ import annotations

import warnings

import authlib.deprecate  # noqa: F401  (Authlib installs its own warning filter first; ours goes on top)

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

__all__ = ["AsyncOAuth2Client", "OAuthError"]
