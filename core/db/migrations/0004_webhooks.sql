-- Webhooks: subscriptions, an outbox of events, and one delivery row per (event, webhook).
--
-- Events are written by triggers, in the transaction that changes the row, so an event exists
-- if and only if the change committed, and no code path can forget to emit one. The same
-- trigger fans the event out to the matching webhooks, so a webhook receives the events that
-- happen after it was created. A dispatcher in the core (core/services/webhook_dispatch.py)
-- sends the deliveries; see docs/webhooks.md.

-- The secret is kept as given (not hashed): the core needs it to sign every delivery.
CREATE TABLE webhooks (
    id          text PRIMARY KEY,
    org_id      text NOT NULL REFERENCES orgs (id),
    url         text NOT NULL,
    events      text[] NOT NULL CHECK (cardinality(events) > 0),
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_org ON webhooks (org_id, created_at);

-- The outbox. org_id is NULL for cluster-wide events (templates), which go to every org's
-- webhooks that subscribe to them.
CREATE TABLE webhook_events (
    id          bigserial PRIMARY KEY,
    org_id      text REFERENCES orgs (id),
    event       text NOT NULL,
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- seq orders a webhook's deliveries: the dispatcher sends a webhook's next delivery only once
-- the ones before it are delivered or dead, so a receiver sees its events in commit order.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seq              bigserial NOT NULL UNIQUE,
    webhook_id       text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES webhook_events (id),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (webhook_id, seq DESC);

-- Record an event and fan it out to the subscribed webhooks; wake the dispatchers (NOTIFY is
-- sent at commit, and not at all on rollback). An event nobody subscribes to is not stored:
-- the outbox grows only with what will be sent.
CREATE FUNCTION dnah_emit_event(p_org_id text, p_event text, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_event_id bigint;
    v_fanned integer;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM webhooks w
        WHERE (p_org_id IS NULL OR w.org_id = p_org_id)
          AND (w.events @> ARRAY['*'] OR w.events @> ARRAY[p_event])
    ) THEN
        RETURN;
    END IF;
    INSERT INTO webhook_events (org_id, event, payload)
    VALUES (
        p_org_id,
        p_event,
        jsonb_build_object(
            'event', p_event,
            'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'data', p_data
        )
    )
    RETURNING id INTO v_event_id;
    INSERT INTO webhook_deliveries (webhook_id, event_id)
    SELECT w.id, v_event_id FROM webhooks w
    WHERE (p_org_id IS NULL OR w.org_id = p_org_id)
      AND (w.events @> ARRAY['*'] OR w.events @> ARRAY[p_event])
    ORDER BY w.id;
    GET DIAGNOSTICS v_fanned = ROW_COUNT;
    IF v_fanned > 0 THEN
        PERFORM pg_notify('dnah_webhooks', '');
    END IF;
END
$$;

-- sandbox.state_updated: on every insert and every change of state.
CREATE FUNCTION dnah_sandbox_state_event() RETURNS trigger
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
            'previous_state', CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.state END,
            'error_reason', NEW.error_reason,
            'updated_at', to_char(NEW.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        )
    );
    RETURN NULL;
END
$$;

CREATE TRIGGER sandboxes_state_inserted AFTER INSERT ON sandboxes
    FOR EACH ROW EXECUTE FUNCTION dnah_sandbox_state_event();
CREATE TRIGGER sandboxes_state_updated AFTER UPDATE OF state ON sandboxes
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION dnah_sandbox_state_event();

-- template.state_updated: a template is "active" while at least one ready host advertises it.
-- When a host row changes, each template it advertised before or after is checked against
-- the other ready hosts; an event is emitted only if the cluster-wide answer flipped.
-- (Two hosts changing at the same instant may both report the same flip: at least once.)
CREATE FUNCTION dnah_template_state_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_host_id text := COALESCE(NEW.id, OLD.id);
    v_before text[] := CASE WHEN TG_OP <> 'INSERT' AND OLD.state = 'ready' THEN OLD.templates ELSE '{}' END;
    v_after text[] := CASE WHEN TG_OP <> 'DELETE' AND NEW.state = 'ready' THEN NEW.templates ELSE '{}' END;
    v_template text;
    v_elsewhere boolean;
BEGIN
    FOR v_template IN
        SELECT DISTINCT t FROM unnest(v_before || v_after) AS t
        WHERE (t = ANY(v_before)) <> (t = ANY(v_after))
        ORDER BY t
    LOOP
        SELECT EXISTS (
            SELECT 1 FROM hosts WHERE id <> v_host_id AND state = 'ready' AND v_template = ANY(templates)
        ) INTO v_elsewhere;
        IF NOT v_elsewhere THEN
            PERFORM dnah_emit_event(
                NULL,
                'template.state_updated',
                jsonb_build_object(
                    'template', v_template,
                    'state', CASE WHEN v_template = ANY(v_after) THEN 'active' ELSE 'inactive' END,
                    'previous_state', CASE WHEN v_template = ANY(v_after) THEN 'inactive' ELSE 'active' END
                )
            );
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER hosts_template_state AFTER INSERT OR DELETE OR UPDATE OF templates, state ON hosts
    FOR EACH ROW EXECUTE FUNCTION dnah_template_state_event();
