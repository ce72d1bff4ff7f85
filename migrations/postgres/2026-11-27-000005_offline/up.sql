-- See the SQLite migration for the comments.
CREATE TABLE offline_heads (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials (id),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0),
    last_hash BYTEA NOT NULL CHECK (length(last_hash) = 32),
    updated_at_us BIGINT NOT NULL
);
CREATE TABLE offline_records (
    credential_id BIGINT NOT NULL REFERENCES credentials (id),
    seq BIGINT NOT NULL CHECK (seq > 0),
    record_hash BYTEA NOT NULL,
    result TEXT NOT NULL,
    entry_seq BIGINT,
    event_id BIGINT,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (credential_id, seq)
);
CREATE TABLE card_debts (
    entry_seq BIGINT PRIMARY KEY,
    card_id BIGINT NOT NULL REFERENCES cards (id),
    delta_minor BIGINT NOT NULL CHECK (delta_minor <> 0)
);
CREATE INDEX card_debts_card ON card_debts (card_id);
CREATE TRIGGER offline_records_append_only BEFORE UPDATE OR DELETE ON offline_records
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER card_debts_append_only BEFORE UPDATE OR DELETE ON card_debts
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
