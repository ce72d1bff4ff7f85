-- Webhooks (issue 17). The outbox is written by the ledger's writer in the same transaction
-- as the entry or refusal it tells of, with one delivery row per subscription that wants
-- it: an acknowledged settlement is never without its webhook, and a rolled-back batch
-- leaves none. Deliveries move forward (attempts, the next try, a lease while one process
-- sends, delivered or given up); every attempt is logged.
CREATE TABLE webhook_subscriptions (
    id BIGSERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- The merchant account whose events it receives; NULL: an operator's, every event.
    account_id BIGINT REFERENCES accounts (id),
    kinds TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE,
    revoked_at_us BIGINT
);
CREATE TABLE webhook_outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('settlement.paid', 'hold.expired', 'card.replay_flagged')),
    account_id BIGINT,
    entry_seq BIGINT,
    payload TEXT NOT NULL,
    created_at_us BIGINT NOT NULL
);
CREATE TABLE webhook_deliveries (
    outbox_id BIGINT NOT NULL REFERENCES webhook_outbox (id),
    subscription_id BIGINT NOT NULL REFERENCES webhook_subscriptions (id),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_us BIGINT NOT NULL,
    lease_until_us BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    done_at_us BIGINT,
    PRIMARY KEY (outbox_id, subscription_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_us);
CREATE TABLE webhook_attempts (
    id BIGSERIAL PRIMARY KEY,
    outbox_id BIGINT NOT NULL,
    subscription_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL,
    time_us BIGINT NOT NULL,
    status INTEGER,
    error TEXT,
    duration_us BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_subscription ON webhook_attempts (subscription_id, id);
CREATE TRIGGER webhook_outbox_append_only BEFORE UPDATE OR DELETE ON webhook_outbox
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER webhook_outbox_no_truncate BEFORE TRUNCATE ON webhook_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER webhook_attempts_append_only BEFORE UPDATE OR DELETE ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER webhook_attempts_no_truncate BEFORE TRUNCATE ON webhook_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
