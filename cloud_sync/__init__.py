"""Cloud sync: tenant-scoped store-and-forward of the outbox to each tenant's cloud platform.

A module plug-in (entry point `edge.modules: cloud_sync`); see README.md for the configuration, the wire
protocol and the delivery guarantees. Public API: `CloudSync` (the module), `CloudSyncConfig`.
"""

from __future__ import annotations

from cloud_sync.config import CloudSyncConfig
from cloud_sync.module import CloudSync

__all__ = ["CloudSync", "CloudSyncConfig"]
