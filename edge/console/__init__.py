"""The site console: plain HTML, CSS and JavaScript modules served by the gateway's API at /console/ (no build
step, nothing fetched from elsewhere, so it works on a site without internet). It signs in with a session
(edge.api.sessions) and uses only the public /v1 API and its WebSocket stream, under the same authorisation
as any other client (docs/console.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"

# The pages run only their own scripts, talk only to their own origin (the API and its WebSocket), and may not be
# framed by another site (clickjacking a write's confirmation).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class ConsoleFiles(StaticFiles):
    """The console's files, with the headers above on every answer."""

    def __init__(self, **options: Any) -> None:
        super().__init__(directory=STATIC, html=True, **options)

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response
