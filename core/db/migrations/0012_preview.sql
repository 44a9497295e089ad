-- Preview URLs: reaching a server that listens on a port inside a sandbox (docs/network.md,
-- "Preview URLs and tokens").

-- A public sandbox's ports are reachable by anyone who has the URL; a private one's only with
-- a token. wake_on_traffic: a request to a paused sandbox resumes it (off by default).
-- preview_token: the sandbox's own token for every port, made on first use (NULL until then).
ALTER TABLE sandboxes ADD COLUMN public boolean NOT NULL DEFAULT false;
ALTER TABLE sandboxes ADD COLUMN wake_on_traffic boolean NOT NULL DEFAULT false;
ALTER TABLE sandboxes ADD COLUMN preview_token text;

-- One port exposed on its own: its own token (revoked by deleting the row), optionally public,
-- optionally until a time. One row per (sandbox, port): exposing again replaces it.
CREATE TABLE preview_exposures (
    sandbox_id  text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    port        integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    token       text NOT NULL UNIQUE,
    public      boolean NOT NULL DEFAULT false,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sandbox_id, port)
);

-- Signed preview tokens carry their own expiry; one expired early is listed here by its nonce
-- until its own expiry has passed (then it is refused anyway, and the row is dropped).
CREATE TABLE preview_revocations (
    nonce       text PRIMARY KEY,
    sandbox_id  text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX preview_revocations_expiry ON preview_revocations (expires_at);
