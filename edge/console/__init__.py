"""The site console: plain HTML, CSS and JavaScript modules served by the gateway's API at /console/ (no build
step, nothing fetched from elsewhere, so it works on a site without internet). It signs in with a session
(edge.api.sessions) and uses only the public /v1 API and its WebSocket stream, under the same authorisation
as any other client (docs/console.md)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
