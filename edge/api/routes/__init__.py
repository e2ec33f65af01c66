"""One router per resource; `edge.api.app.build_app` includes each of `ROUTERS`."""

from __future__ import annotations

from fastapi import APIRouter

from edge.api import metrics
from edge.api.routes import commissioning, devices, health, modules, session, stream, sync, tenants, webhooks

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    session.router,
    devices.router,
    commissioning.router,
    modules.router,
    tenants.router,
    sync.router,
    webhooks.router,
    stream.router,
    metrics.router,
)
