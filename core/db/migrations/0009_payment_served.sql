-- The core's own record of a paid request it served (the gateway forwards the payment id),
-- so a gateway that dies after recording a payment cannot lose its outcome or its refund.
ALTER TABLE payments ADD COLUMN serving_since timestamptz;  -- the core began to serve it
ALTER TABLE payments ADD COLUMN served_status integer;      -- the status the core answered
ALTER TABLE payments ADD COLUMN settled_by text;            -- 'gateway' (outcome report) or 'core' (sweep)
UPDATE payments SET settled_by = 'gateway' WHERE completed_at IS NOT NULL;
CREATE INDEX payments_open ON payments (created_at) WHERE completed_at IS NULL;
