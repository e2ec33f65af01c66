"""The cluster's tables in PostgreSQL (schema `edge_cluster`): members and leases, created at first join.

One row per instance in `members` (heartbeat, expiry, draining); one row per device and per tenant leadership in
`leases`. Expiry times are PostgreSQL's clock (`now()`), so the hosts' clocks never decide who owns what; each
instance fences itself on its own monotonic clock (edge/cluster/member.py).
"""

from __future__ import annotations

SCHEMA = "edge_cluster"
SCHEMA_VERSION = 1

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS {SCHEMA}.members (
    cluster      text        NOT NULL,
    instance     text        NOT NULL,
    token        text        NOT NULL,   -- one per process: a restarted instance is a new incarnation
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    draining     boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (cluster, instance)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.leases (
    cluster     text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('device', 'leader')),
    name        text        NOT NULL,
    owner       text,                    -- instance name; NULL once released
    token       text,                    -- the owner's incarnation
    epoch       bigint      NOT NULL DEFAULT 1,  -- fencing token: +1 at every change of owner
    expires_at  timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    sequence    bigint      NOT NULL DEFAULT 0,  -- a device's last event sequence as its owner last said
    handover    text        NOT NULL DEFAULT 'new' CHECK (handover IN ('new', 'released', 'expired')),
    previous    text,                    -- the owner before this one
    PRIMARY KEY (cluster, kind, name)
);
CREATE INDEX IF NOT EXISTS leases_by_token ON {SCHEMA}.leases (cluster, token);
INSERT INTO {SCHEMA}.meta VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING;
"""
