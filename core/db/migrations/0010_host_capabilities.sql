-- What each host's runtime backend can do (``contracts.host.Capabilities``), declared at every
-- registration. Rows of hosts registered before this column existed get what their runtime
-- (OCI, the only real one then) does, and are corrected by their next registration anyway.
ALTER TABLE hosts ADD COLUMN memory_snapshot boolean NOT NULL DEFAULT false;
ALTER TABLE hosts ADD COLUMN live_resize boolean NOT NULL DEFAULT true;
ALTER TABLE hosts ADD COLUMN fork boolean NOT NULL DEFAULT false;
