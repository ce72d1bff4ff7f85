-- Kartu ledger, SQLite. Journal tables are append-only: triggers reject UPDATE and DELETE.
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('card_wallet', 'merchant', 'agent_float', 'city_bank',
                                       'fee_revenue', 'suspense', 'holds', 'offline_risk')),
    currency TEXT NOT NULL CHECK (length(currency) = 3),
    name TEXT NOT NULL,
    never_negative BOOLEAN NOT NULL,
    balance_max_minor BIGINT CHECK (balance_max_minor IS NULL OR balance_max_minor >= 0),
    created_at_us BIGINT NOT NULL
);
-- One system account of each kind per currency.
CREATE UNIQUE INDEX accounts_system ON accounts (kind, currency)
    WHERE kind IN ('city_bank', 'fee_revenue', 'suspense', 'holds', 'offline_risk');

-- The one mutable row: the last sequence number and time written. Every writer locks it
-- first, which serialises writers (gapless sequence, no overdraft) across processes.
CREATE TABLE ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq BIGINT NOT NULL,
    last_time_us BIGINT NOT NULL
);
INSERT INTO ledger_head (id, last_seq, last_time_us) VALUES (1, 0, 0);

CREATE TABLE journal_entries (
    seq INTEGER PRIMARY KEY CHECK (seq > 0),
    kind TEXT NOT NULL CHECK (kind IN ('topup', 'payment', 'refund', 'hold', 'capture', 'void',
                                       'transfer', 'adjustment', 'settlement', 'card_replacement')),
    time_us BIGINT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0),
    fee_minor BIGINT NOT NULL CHECK (fee_minor >= 0),
    account_id BIGINT REFERENCES accounts (id),
    counterparty_id BIGINT REFERENCES accounts (id),
    related_seq BIGINT REFERENCES journal_entries (seq),
    expires_at_us BIGINT,
    terminal_id TEXT,
    card_id BIGINT,
    card_read_counter BIGINT,
    merchant_reference TEXT,
    memo TEXT,
    idempotency_key TEXT,
    request_hash BLOB
);
CREATE UNIQUE INDEX journal_entries_idempotency_key ON journal_entries (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX journal_entries_card_counter ON journal_entries (card_id, card_read_counter)
    WHERE card_read_counter IS NOT NULL;
-- A hold is captured or voided at most once.
CREATE UNIQUE INDEX journal_entries_hold_closed ON journal_entries (related_seq)
    WHERE kind IN ('capture', 'void');
CREATE INDEX journal_entries_related ON journal_entries (related_seq) WHERE related_seq IS NOT NULL;
CREATE INDEX journal_entries_time ON journal_entries (time_us);
CREATE INDEX journal_entries_holds ON journal_entries (expires_at_us) WHERE kind = 'hold';

CREATE TABLE postings (
    entry_seq BIGINT NOT NULL REFERENCES journal_entries (seq),
    leg INTEGER NOT NULL CHECK (leg >= 0),
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),
    balance_after_minor BIGINT NOT NULL,
    PRIMARY KEY (entry_seq, leg)
) WITHOUT ROWID;
CREATE INDEX postings_account ON postings (account_id, entry_seq);

CREATE TRIGGER accounts_no_update BEFORE UPDATE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts is append-only'); END;
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts is append-only'); END;
CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal_entries is append-only'); END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'journal_entries is append-only'); END;
CREATE TRIGGER postings_no_update BEFORE UPDATE ON postings
BEGIN SELECT RAISE(ABORT, 'postings is append-only'); END;
CREATE TRIGGER postings_no_delete BEFORE DELETE ON postings
BEGIN SELECT RAISE(ABORT, 'postings is append-only'); END;
