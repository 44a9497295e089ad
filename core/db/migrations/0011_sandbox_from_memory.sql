-- Whether a sandbox began as a clone or fork of a snapshot that holds memory: it then went on
-- running the parent's processes as they were at the snapshot, rather than booting fresh on
-- the snapshot's disk. Set once, at clone time, from the snapshot's ``memory``; rows made
-- before this column existed were all booted fresh (no runtime held memory then).
ALTER TABLE sandboxes ADD COLUMN from_memory boolean NOT NULL DEFAULT false;
