-- Card taps and audit events; see the SQLite migration for the comments.
CREATE TABLE card_counters (
    card_id BIGINT PRIMARY KEY,
    last_counter BIGINT NOT NULL CHECK (last_counter BETWEEN 0 AND 16777215),
    time_us BIGINT NOT NULL
);
INSERT INTO card_counters (card_id, last_counter, time_us)
    SELECT card_id, MAX(card_read_counter), MAX(time_us) FROM journal_entries
    WHERE card_id IS NOT NULL AND card_read_counter IS NOT NULL GROUP BY card_id;

CREATE TABLE card_replays (
    id BIGSERIAL PRIMARY KEY,
    card_id BIGINT NOT NULL,
    counter BIGINT NOT NULL,
    last_counter BIGINT NOT NULL,
    time_us BIGINT NOT NULL,
    source TEXT
);
CREATE INDEX card_replays_card ON card_replays (card_id, id);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    scope TEXT,
    card_id BIGINT,
    card_read_counter BIGINT,
    queue_key TEXT,
    queue_number BIGINT,
    idempotency_key TEXT,
    request_hash BYTEA,
    payload TEXT NOT NULL,
    leaf_index BIGINT
);
CREATE UNIQUE INDEX audit_events_idempotency_key ON audit_events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX audit_events_queue ON audit_events (queue_key, queue_number)
    WHERE queue_key IS NOT NULL;
CREATE INDEX audit_events_kind ON audit_events (kind, id);
CREATE INDEX audit_events_card ON audit_events (card_id, id) WHERE card_id IS NOT NULL;

CREATE TRIGGER card_replays_append_only BEFORE UPDATE OR DELETE ON card_replays
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER card_replays_no_truncate BEFORE TRUNCATE ON card_replays
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();

CREATE FUNCTION kartu_counter_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.last_counter <= OLD.last_counter THEN
        RAISE EXCEPTION 'a card counter only moves forward';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER card_counters_forward BEFORE UPDATE OR DELETE ON card_counters
    FOR EACH ROW EXECUTE FUNCTION kartu_counter_forward();
CREATE TRIGGER card_counters_no_truncate BEFORE TRUNCATE ON card_counters
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
