-- Egress policies and secrets (docs/network.md, "Egress policy and secrets API").

-- Where a sandbox may connect: contracts.host.EgressPolicy as JSON ({mode, cidrs, domains});
-- NULL: the operator's default (hostd's DNAH_EGRESS_DEFAULT).
ALTER TABLE sandboxes ADD COLUMN egress jsonb;

-- An org's secrets. The value is sealed (NaCl SecretBox under the core's DNAH_SECRETS_KEY:
-- a 24-byte nonce, then the ciphertext); it is never returned by the API. ``hosts``: the
-- domain patterns its placeholder may be replaced for.
CREATE TABLE secrets (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (id),
    name        text NOT NULL,
    sealed      bytea NOT NULL,
    hosts       text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

-- Which secrets a sandbox was given at create, and the placeholder its environment holds
-- for each. A deleted secret takes its grants with it (its placeholder then stays a
-- placeholder); a deleted sandbox row never happens (rows are kept as destroyed).
CREATE TABLE sandbox_secrets (
    sandbox_id   text NOT NULL REFERENCES sandboxes (id),
    secret_id    text NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    placeholder  text NOT NULL UNIQUE,
    PRIMARY KEY (sandbox_id, secret_id)
);
CREATE INDEX sandbox_secrets_secret ON sandbox_secrets (secret_id);
