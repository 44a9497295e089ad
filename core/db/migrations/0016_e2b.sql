-- E2B's control plane (docs/e2b.md, "Control plane").
-- envd_token: the sandbox's data-plane token, made when it is created through E2B's API
-- (``POST /v2/sandboxes``) and returned as ``envdAccessToken``; envd requests must carry it as
-- ``X-Access-Token``. NULL for sandboxes made through the other shapes (no token enforced).
-- deadline_at: E2B's timeout as an absolute time; the reaper acts on it once it has passed.
-- on_deadline: what the reaper does then, 'delete' (E2B's default: kill) or 'pause'
-- (autoPause). Both NULL: no deadline.
ALTER TABLE sandboxes ADD COLUMN envd_token text;
ALTER TABLE sandboxes ADD COLUMN deadline_at timestamptz;
ALTER TABLE sandboxes ADD COLUMN on_deadline text CHECK (on_deadline IN ('delete', 'pause'));
CREATE INDEX sandboxes_deadline ON sandboxes (deadline_at) WHERE deadline_at IS NOT NULL;
