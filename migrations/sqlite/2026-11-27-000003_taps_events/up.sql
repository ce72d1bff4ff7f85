-- Card taps and audit events.
--
-- card_counters: the last SDM read counter accepted per card. A tap is accepted only with a
-- strictly greater counter; the writer updates this row under the ledger head lock, so the
-- check is atomic across threads and processes. The one mutable table besides ledger_head.
CREATE TABLE card_counters (
    card_id INTEGER PRIMARY KEY,
    last_counter BIGINT NOT NULL CHECK (last_counter BETWEEN 0 AND 16777215),
    time_us BIGINT NOT NULL
);
INSERT INTO card_counters (card_id, last_counter, time_us)
    SELECT card_id, MAX(card_read_counter), MAX(time_us) FROM journal_entries
    WHERE card_id IS NOT NULL AND card_read_counter IS NOT NULL GROUP BY card_id;

-- Refused taps whose counter was not above the last one seen: a replay or a cloned card.
CREATE TABLE card_replays (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    card_id BIGINT NOT NULL,
    counter BIGINT NOT NULL,
    last_counter BIGINT NOT NULL,
    time_us BIGINT NOT NULL,
    source TEXT
);
CREATE INDEX card_replays_card ON card_replays (card_id, id);

-- Audit events: access decisions, operator actions, other taps. Each is a leaf of the
-- audit log (leaf_index) unless the log is switched off.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    scope TEXT,
    card_id BIGINT,
    card_read_counter BIGINT,
    queue_key TEXT,
    queue_number BIGINT,
    idempotency_key TEXT,
    request_hash BLOB,
    payload TEXT NOT NULL,
    leaf_index BIGINT
);
CREATE UNIQUE INDEX audit_events_idempotency_key ON audit_events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX audit_events_queue ON audit_events (queue_key, queue_number)
    WHERE queue_key IS NOT NULL;
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_card ON audit_events (card_id, id) WHERE card_id IS NOT NULL;

CREATE TRIGGER card_replays_no_update BEFORE UPDATE ON card_replays
BEGIN SELECT RAISE(ABORT, 'card_replays is append-only'); END;
CREATE TRIGGER card_replays_no_delete BEFORE DELETE ON card_replays
BEGIN SELECT RAISE(ABORT, 'card_replays is append-only'); END;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
-- A counter never goes back.
CREATE TRIGGER card_counters_forward BEFORE UPDATE ON card_counters
WHEN NEW.last_counter <= OLD.last_counter
BEGIN SELECT RAISE(ABORT, 'a card counter only moves forward'); END;
CREATE TRIGGER card_counters_no_delete BEFORE DELETE ON card_counters
BEGIN SELECT RAISE(ABORT, 'card_counters rows are never deleted'); END;
