-- Snapshots of sandboxes, their lineage, and restoring a sandbox from one.

ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_state_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_state_check CHECK (state IN (
    'creating', 'started', 'stopping', 'stopped', 'starting',
    'pausing', 'paused', 'resuming', 'archiving', 'archived', 'unarchiving', 'restoring',
    'destroying', 'destroyed', 'error'));

CREATE TABLE snapshots (
    id             text PRIMARY KEY,
    org_id         text NOT NULL REFERENCES orgs (id),
    sandbox_id     text NOT NULL REFERENCES sandboxes (id),
    host_id        text NOT NULL REFERENCES hosts (id),
    template       text NOT NULL,
    -- 'creating' until hostd wrote it and the core sealed it with its signature; a row left
    -- 'creating' by a crash is never used (and is removed by the sweeper).
    state          text NOT NULL CHECK (state IN ('creating', 'ready', 'deleted')),
    kid            text,
    manifest_hash  text,
    size_bytes     bigint,
    memory         boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX snapshots_of_sandbox ON snapshots (sandbox_id, created_at DESC) WHERE state <> 'deleted';

-- Lineage: a sandbox cloned or forked from another's snapshot names both.
ALTER TABLE sandboxes ADD COLUMN parent_id text REFERENCES sandboxes (id);
ALTER TABLE sandboxes ADD COLUMN source_snapshot_id text REFERENCES snapshots (id);
CREATE INDEX sandboxes_children ON sandboxes (parent_id) WHERE parent_id IS NOT NULL AND state <> 'destroyed';
