-- Orgs, API keys, hosts and sandboxes: the control plane's state.
CREATE TABLE orgs (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored as SHA-256 of the full token: tokens carry 256 bits of randomness, so a
-- slow password hash would add latency to every call without adding safety.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (id),
    name        text NOT NULL DEFAULT '',
    token_hash  bytea NOT NULL UNIQUE,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE hosts (
    id                 text PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    api_url            text NOT NULL,
    api_token          text NOT NULL,
    runtime            text NOT NULL,
    cpu                integer NOT NULL CHECK (cpu > 0),
    ram_mb             integer NOT NULL CHECK (ram_mb > 0),
    disk_gb            integer NOT NULL CHECK (disk_gb > 0),
    templates          text[] NOT NULL DEFAULT '{}',
    state              text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'draining', 'offline')),
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sandboxes (
    id                 text PRIMARY KEY,
    org_id             text NOT NULL REFERENCES orgs (id),
    name               text NOT NULL,
    host_id            text REFERENCES hosts (id),
    template           text NOT NULL,
    cpu                integer NOT NULL,
    ram_mb             integer NOT NULL,
    disk_gb            integer NOT NULL,
    env                jsonb NOT NULL DEFAULT '{}',
    labels             jsonb NOT NULL DEFAULT '{}',
    language           text NOT NULL DEFAULT 'python',
    state              text NOT NULL CHECK (state IN (
                           'creating', 'started', 'stopping', 'stopped', 'starting',
                           'destroying', 'destroyed', 'error')),
    error_reason       text,
    ip                 text,
    auto_stop_minutes  integer NOT NULL DEFAULT 0,
    auto_archive_days  integer NOT NULL DEFAULT 0,
    auto_delete_days   integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    last_activity_at   timestamptz NOT NULL DEFAULT now()
);

-- A name is unique among an org's live sandboxes; a destroyed one frees its name.
CREATE UNIQUE INDEX sandboxes_org_name ON sandboxes (org_id, name) WHERE state <> 'destroyed';
CREATE INDEX sandboxes_org_listing ON sandboxes (org_id, created_at DESC);
CREATE INDEX sandboxes_placed ON sandboxes (host_id) WHERE state <> 'destroyed';
