-- Money integrity; see the SQLite migration for the comments.
CREATE TABLE wallet_debts (
    entry_seq BIGINT NOT NULL REFERENCES journal_entries (seq),
    wallet_id BIGINT NOT NULL REFERENCES accounts (id),
    delta_minor BIGINT NOT NULL CHECK (delta_minor <> 0),
    payment_seq BIGINT,
    merchant_id BIGINT,
    time_us BIGINT NOT NULL,
    PRIMARY KEY (entry_seq, wallet_id)
);
CREATE INDEX wallet_debts_wallet ON wallet_debts (wallet_id);
CREATE INDEX wallet_debts_payment ON wallet_debts (payment_seq) WHERE payment_seq IS NOT NULL;
CREATE INDEX wallet_debts_merchant ON wallet_debts (merchant_id, time_us) WHERE merchant_id IS NOT NULL;
INSERT INTO wallet_debts (entry_seq, wallet_id, delta_minor, payment_seq, merchant_id, time_us)
    SELECT d.entry_seq, c.account_id, d.delta_minor,
           CASE WHEN d.delta_minor > 0 THEN d.entry_seq END,
           CASE WHEN d.delta_minor > 0 THEN e.counterparty_id END,
           e.time_us
    FROM card_debts d JOIN cards c ON c.id = d.card_id JOIN journal_entries e ON e.seq = d.entry_seq;

CREATE TABLE wallet_successors (
    wallet_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    successor_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
    entry_seq BIGINT NOT NULL REFERENCES journal_entries (seq)
);

CREATE TABLE offline_payments (
    entry_seq BIGINT PRIMARY KEY REFERENCES journal_entries (seq),
    credential_id BIGINT NOT NULL,
    record_seq BIGINT NOT NULL,
    sync_id BIGINT NOT NULL,
    card_id BIGINT NOT NULL,
    record_time_us BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
    UNIQUE (credential_id, record_seq)
);
CREATE INDEX offline_payments_card ON offline_payments (credential_id, card_id, record_time_us);
CREATE INDEX offline_payments_sync ON offline_payments (credential_id, sync_id);

CREATE TABLE offline_syncs (
    id BIGSERIAL PRIMARY KEY,
    credential_id BIGINT NOT NULL REFERENCES credentials (id),
    time_us BIGINT NOT NULL,
    limits TEXT,
    denied TEXT NOT NULL
);
CREATE INDEX offline_syncs_credential ON offline_syncs (credential_id, time_us);

ALTER TABLE audit_events ADD COLUMN holder_key TEXT;
CREATE INDEX audit_events_holder ON audit_events (holder_key, time_us) WHERE holder_key IS NOT NULL;

CREATE TRIGGER wallet_debts_append_only BEFORE UPDATE OR DELETE ON wallet_debts
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER wallet_debts_no_truncate BEFORE TRUNCATE ON wallet_debts
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER wallet_successors_append_only BEFORE UPDATE OR DELETE ON wallet_successors
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER wallet_successors_no_truncate BEFORE TRUNCATE ON wallet_successors
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER offline_payments_append_only BEFORE UPDATE OR DELETE ON offline_payments
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER offline_payments_no_truncate BEFORE TRUNCATE ON offline_payments
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER offline_syncs_append_only BEFORE UPDATE OR DELETE ON offline_syncs
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER offline_syncs_no_truncate BEFORE TRUNCATE ON offline_syncs
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
