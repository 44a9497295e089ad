-- SSH access to sandboxes through the SSH gateway (docs/ssh.md).
-- ssh_access: short-lived tokens (Daytona's ssh-access). Only the token's SHA-256 is kept; the
-- token itself is shown once, at creation. Revoking deletes the row; an expired row no longer
-- authenticates anyone and is deleted by the next creation for its sandbox.
CREATE TABLE ssh_access (
    id text PRIMARY KEY,
    sandbox_id text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ssh_access_sandbox ON ssh_access (sandbox_id);

-- ssh_keys: public keys authorized for one sandbox (native ssh-keys). Replacing the set
-- deletes the old rows, so a rotated-out key stops working at once.
CREATE TABLE ssh_keys (
    sandbox_id text NOT NULL REFERENCES sandboxes (id) ON DELETE CASCADE,
    fingerprint text NOT NULL,
    public_key text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sandbox_id, fingerprint)
);
