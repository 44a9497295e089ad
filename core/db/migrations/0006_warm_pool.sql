-- The warm pool: started sandboxes waiting to be claimed by a create. They belong to this
-- org, which has no keys, so they never appear in any real org's listings; a claim moves a
-- row to its new org in one UPDATE.
INSERT INTO orgs (id, name) VALUES ('org_pool', 'warm pool') ON CONFLICT (id) DO NOTHING;

CREATE INDEX sandboxes_pool ON sandboxes (template, cpu, ram_mb, disk_gb, created_at)
    WHERE org_id = 'org_pool' AND state = 'started';

-- A claimed pool sandbox appears to its new org as a new sandbox, already started: the org's
-- webhooks get the same sandbox.state_updated a cold create ends with (previous_state null,
-- as for an insert).
CREATE FUNCTION dnah_sandbox_claimed_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dnah_emit_event(
        NEW.org_id,
        'sandbox.state_updated',
        jsonb_build_object(
            'id', NEW.id,
            'name', NEW.name,
            'org_id', NEW.org_id,
            'template', NEW.template,
            'state', NEW.state,
            'previous_state', NULL,
            'error_reason', NEW.error_reason,
            'updated_at', to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        )
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER sandboxes_claimed AFTER UPDATE OF org_id ON sandboxes
    FOR EACH ROW WHEN (OLD.org_id = 'org_pool' AND NEW.org_id <> 'org_pool')
    EXECUTE FUNCTION dnah_sandbox_claimed_event();
