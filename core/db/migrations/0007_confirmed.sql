-- When the sandbox's host last said it runs: set whenever a row enters ``started`` (each such
-- move follows the host's answer), and by every registration and heartbeat whose inventory
-- lists it running. A warm-pool sandbox is claimable only when this is no older than its
-- host's latest registration, so a restarted hostd's stopped sandboxes are never handed out
-- on the strength of what the previous hostd said.
ALTER TABLE sandboxes ADD COLUMN confirmed_at timestamptz;
UPDATE sandboxes SET confirmed_at = updated_at WHERE state = 'started';
