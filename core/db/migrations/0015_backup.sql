-- Daytona's backup of a sandbox (``POST /sandbox/{id}/backup``), kept as one of our signed
-- snapshots that the sandbox's row points at. A new backup replaces the previous one, whose
-- snapshot is then deleted. ``backup_state`` is Daytona's BackupState word, as the DTO shows it:
-- 'None' until the first backup, 'InProgress' while one is being taken, then 'Completed' or
-- 'Error' (the previous backup, if any, is kept when a new one fails). ``backup_started_at``
-- dates an 'InProgress' claim: one older than the core's long-operation limit was left by a
-- core that died mid-backup, and the next backup call may take it over.
ALTER TABLE sandboxes ADD COLUMN backup_state text NOT NULL DEFAULT 'None'
    CHECK (backup_state IN ('None', 'Pending', 'InProgress', 'Completed', 'Error'));
ALTER TABLE sandboxes ADD COLUMN backup_snapshot_id text REFERENCES snapshots (id);
ALTER TABLE sandboxes ADD COLUMN backup_created_at timestamptz;
ALTER TABLE sandboxes ADD COLUMN backup_started_at timestamptz;
