-- The core's own record of a paid request it served (the gateway forwards the payment id),
-- so a gateway that dies after recording a payment cannot lose its outcome or its refund.
ALTER TABLE payments ADD COLUMN serving_since timestamptz;  -- the core began to serve it
ALTER TABLE payments ADD COLUMN served_status integer;      -- the status the core answered
ALTER TABLE payments ADD COLUMN settled_by text;            -- 'gateway' (outcome report) or 'core' (sweep)
-- A payment credited back as never served gives its idempotency key up (it moves here), so
-- the key's retry can pay and run the request after all.
ALTER TABLE payments ADD COLUMN released_key text;
CREATE INDEX payments_released_key ON payments (released_key) WHERE released_key IS NOT NULL;
UPDATE payments SET settled_by = 'gateway' WHERE completed_at IS NOT NULL;
CREATE INDEX payments_open ON payments (created_at) WHERE completed_at IS NULL;
