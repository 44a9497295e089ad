-- Whether the host confirmed that a deleted snapshot's data is gone. A snapshot is marked
-- ``deleted`` before its host is asked to remove it; when the host is down or dies meanwhile,
-- the data stays on its disk, and the sweeper asks again (``SnapshotService.sweep_stale``)
-- until the host confirms. Rows deleted before this column existed are asked once more
-- (removing an absent snapshot is a no-op on the host).
ALTER TABLE snapshots ADD COLUMN purged boolean NOT NULL DEFAULT false;
UPDATE snapshots SET purged = true WHERE state <> 'deleted';
CREATE INDEX snapshots_unpurged ON snapshots (host_id) WHERE state = 'deleted' AND NOT purged;
