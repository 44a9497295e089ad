-- Sandbox lifecycle: pause/resume, archive, lifecycle presets and automatic timers.

ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_state_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_state_check CHECK (state IN (
    'creating', 'started', 'stopping', 'stopped', 'starting',
    'pausing', 'paused', 'resuming', 'archiving', 'archived', 'unarchiving',
    'destroying', 'destroyed', 'error'));

-- Timers in minutes; NULL means never. auto_delete_minutes = 0 means "as soon as it stops"
-- (Daytona's ephemeral). Days become minutes so the Daytona setters are exact.
ALTER TABLE sandboxes ADD COLUMN lifecycle text NOT NULL DEFAULT 'persistent'
    CHECK (lifecycle IN ('persistent', 'ephemeral'));
ALTER TABLE sandboxes ALTER COLUMN auto_stop_minutes DROP NOT NULL;
ALTER TABLE sandboxes ALTER COLUMN auto_stop_minutes DROP DEFAULT;
UPDATE sandboxes SET auto_stop_minutes = NULL WHERE auto_stop_minutes = 0;
ALTER TABLE sandboxes ADD COLUMN auto_archive_minutes integer CHECK (auto_archive_minutes > 0);
ALTER TABLE sandboxes ADD COLUMN auto_delete_minutes integer CHECK (auto_delete_minutes >= 0);
UPDATE sandboxes SET auto_archive_minutes = NULLIF(auto_archive_days, 0) * 1440,
                     auto_delete_minutes = NULLIF(auto_delete_days, 0) * 1440;
ALTER TABLE sandboxes DROP COLUMN auto_archive_days;
ALTER TABLE sandboxes DROP COLUMN auto_delete_days;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_auto_stop_check CHECK (auto_stop_minutes > 0);

-- When the sandbox last stopped (auto-archive and auto-delete count from it; archiving does
-- not reset it). NULL while it has never stopped.
ALTER TABLE sandboxes ADD COLUMN stopped_at timestamptz;
UPDATE sandboxes SET stopped_at = updated_at WHERE state = 'stopped';

-- The reaper's scans: only sandboxes with a timer are candidates.
CREATE INDEX sandboxes_auto_stop ON sandboxes (last_activity_at)
    WHERE state = 'started' AND auto_stop_minutes IS NOT NULL;
CREATE INDEX sandboxes_auto_after_stop ON sandboxes (stopped_at)
    WHERE state IN ('stopped', 'archived')
      AND (auto_archive_minutes IS NOT NULL OR auto_delete_minutes IS NOT NULL);
