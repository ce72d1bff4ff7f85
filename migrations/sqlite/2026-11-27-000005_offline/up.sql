-- Offline store-and-forward: where each terminal's uploaded journal stands, what became of
-- each record, and what cards owe after offline payments their wallets could not cover.
CREATE TABLE offline_heads (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials (id),
    last_seq BIGINT NOT NULL CHECK (last_seq >= 0),
    last_hash BLOB NOT NULL CHECK (length(last_hash) = 32),
    updated_at_us BIGINT NOT NULL
);
CREATE TABLE offline_records (
    credential_id BIGINT NOT NULL REFERENCES credentials (id),
    seq BIGINT NOT NULL CHECK (seq > 0),
    record_hash BLOB NOT NULL,
    result TEXT NOT NULL,
    entry_seq BIGINT,
    event_id BIGINT,
    created_at_us BIGINT NOT NULL,
    PRIMARY KEY (credential_id, seq)
);
-- One row per entry that changed a card's debt: a shortfall (positive) or a repayment by a
-- top-up (negative). What a card owes is the sum.
CREATE TABLE card_debts (
    entry_seq BIGINT PRIMARY KEY,
    card_id BIGINT NOT NULL REFERENCES cards (id),
    delta_minor BIGINT NOT NULL CHECK (delta_minor <> 0)
);
CREATE INDEX card_debts_card ON card_debts (card_id);
CREATE TRIGGER offline_records_no_update BEFORE UPDATE ON offline_records
BEGIN SELECT RAISE(ABORT, 'offline_records is append-only'); END;
CREATE TRIGGER offline_records_no_delete BEFORE DELETE ON offline_records
BEGIN SELECT RAISE(ABORT, 'offline_records is append-only'); END;
CREATE TRIGGER card_debts_no_update BEFORE UPDATE ON card_debts
BEGIN SELECT RAISE(ABORT, 'card_debts is append-only'); END;
CREATE TRIGGER card_debts_no_delete BEFORE DELETE ON card_debts
BEGIN SELECT RAISE(ABORT, 'card_debts is append-only'); END;
