-- Money integrity: the state the ledger's writer decides with, written by the writer in the
-- same transaction as the entry that changes it, under the head lock.

-- What a card wallet owes after offline payments it could not cover: one row per entry and
-- wallet, positive for a shortfall, negative for a repayment (top-up, refund) or for the
-- debt a replacement moved to the new wallet. `payment_seq` names the offline payment whose
-- shortfall the row made or repaid (a refund repays its own payment's shortfall first);
-- `merchant_id` the merchant account whose offline record made the shortfall.
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

-- A replaced card's wallet and the wallet that took over its balance: any later credit to
-- the old wallet (a refund, a released hold) goes to its successor in the same entry.
CREATE TABLE wallet_successors (
    wallet_id BIGINT PRIMARY KEY REFERENCES accounts (id),
    successor_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
    entry_seq BIGINT NOT NULL REFERENCES journal_entries (seq)
);

-- Offline payments as posted, with what the writer checked them against: the terminal's
-- per-card daily total, its total since the sync the record names.
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

-- What a terminal received when it last synced: its limits and the deny list (card ids),
-- so an upload is judged by what the terminal could know.
CREATE TABLE offline_syncs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    credential_id BIGINT NOT NULL REFERENCES credentials (id),
    time_us BIGINT NOT NULL,
    limits TEXT,
    denied TEXT NOT NULL
);
CREATE INDEX offline_syncs_credential ON offline_syncs (credential_id, time_us);

-- Access decisions that count against a holder's quota and passback at a service point.
ALTER TABLE audit_events ADD COLUMN holder_key TEXT;
CREATE INDEX audit_events_holder ON audit_events (holder_key, time_us) WHERE holder_key IS NOT NULL;

CREATE TRIGGER wallet_debts_no_update BEFORE UPDATE ON wallet_debts
BEGIN SELECT RAISE(ABORT, 'wallet_debts is append-only'); END;
CREATE TRIGGER wallet_debts_no_delete BEFORE DELETE ON wallet_debts
BEGIN SELECT RAISE(ABORT, 'wallet_debts is append-only'); END;
CREATE TRIGGER wallet_successors_no_update BEFORE UPDATE ON wallet_successors
BEGIN SELECT RAISE(ABORT, 'wallet_successors is append-only'); END;
CREATE TRIGGER wallet_successors_no_delete BEFORE DELETE ON wallet_successors
BEGIN SELECT RAISE(ABORT, 'wallet_successors is append-only'); END;
CREATE TRIGGER offline_payments_no_update BEFORE UPDATE ON offline_payments
BEGIN SELECT RAISE(ABORT, 'offline_payments is append-only'); END;
CREATE TRIGGER offline_payments_no_delete BEFORE DELETE ON offline_payments
BEGIN SELECT RAISE(ABORT, 'offline_payments is append-only'); END;
CREATE TRIGGER offline_syncs_no_update BEFORE UPDATE ON offline_syncs
BEGIN SELECT RAISE(ABORT, 'offline_syncs is append-only'); END;
CREATE TRIGGER offline_syncs_no_delete BEFORE DELETE ON offline_syncs
BEGIN SELECT RAISE(ABORT, 'offline_syncs is append-only'); END;
