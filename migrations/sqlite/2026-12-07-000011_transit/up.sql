-- Public transport (issue 18). Routes (with their stops, in order) belong to a transit
-- operator (a merchant of category transit); a validator is a merchant_terminal credential
-- bound to a route (on a vehicle) or to a stop of it (a station gate). Fare tables take
-- effect at a time no earlier than their approval and are never changed: a ride is priced
-- by the table in force when it boarded. Taps and the entries each ride made are journal
-- rows: the writer prices a card's taps again from them and posts only the differences.
CREATE TABLE transit_routes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id BIGINT NOT NULL REFERENCES merchants (id),
    name TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('bus', 'brt', 'ferry', 'rail')),
    stops TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE transit_validators (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials (id),
    route_id BIGINT NOT NULL REFERENCES transit_routes (id),
    stop BIGINT,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE fare_tables (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    effective_from_us BIGINT NOT NULL,
    time_zone TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE transit_taps (
    event_id BIGINT PRIMARY KEY,
    card_id BIGINT NOT NULL,
    credential_id BIGINT NOT NULL,
    route_id BIGINT NOT NULL,
    stop BIGINT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('on', 'off')),
    tap_time_us BIGINT NOT NULL,
    offline BOOLEAN NOT NULL
);
CREATE INDEX transit_taps_card ON transit_taps (card_id, tap_time_us);
CREATE TABLE transit_entries (
    entry_seq BIGINT PRIMARY KEY,
    card_id BIGINT NOT NULL,
    ride_event_id BIGINT NOT NULL,
    event_id BIGINT NOT NULL
);
CREATE INDEX transit_entries_event ON transit_entries (event_id);
CREATE INDEX transit_entries_card ON transit_entries (card_id, ride_event_id);
CREATE TRIGGER transit_routes_no_update BEFORE UPDATE ON transit_routes
BEGIN SELECT RAISE(ABORT, 'transit_routes is append-only'); END;
CREATE TRIGGER transit_routes_no_delete BEFORE DELETE ON transit_routes
BEGIN SELECT RAISE(ABORT, 'transit_routes is append-only'); END;
CREATE TRIGGER transit_validators_no_update BEFORE UPDATE ON transit_validators
BEGIN SELECT RAISE(ABORT, 'transit_validators is append-only'); END;
CREATE TRIGGER transit_validators_no_delete BEFORE DELETE ON transit_validators
BEGIN SELECT RAISE(ABORT, 'transit_validators is append-only'); END;
CREATE TRIGGER fare_tables_no_update BEFORE UPDATE ON fare_tables
BEGIN SELECT RAISE(ABORT, 'fare_tables is append-only'); END;
CREATE TRIGGER fare_tables_no_delete BEFORE DELETE ON fare_tables
BEGIN SELECT RAISE(ABORT, 'fare_tables is append-only'); END;
CREATE TRIGGER transit_taps_no_update BEFORE UPDATE ON transit_taps
BEGIN SELECT RAISE(ABORT, 'transit_taps is append-only'); END;
CREATE TRIGGER transit_taps_no_delete BEFORE DELETE ON transit_taps
BEGIN SELECT RAISE(ABORT, 'transit_taps is append-only'); END;
CREATE TRIGGER transit_entries_no_update BEFORE UPDATE ON transit_entries
BEGIN SELECT RAISE(ABORT, 'transit_entries is append-only'); END;
CREATE TRIGGER transit_entries_no_delete BEFORE DELETE ON transit_entries
BEGIN SELECT RAISE(ABORT, 'transit_entries is append-only'); END;
-- A fare table is a request a second operator approves (SQLite cannot change a CHECK in
-- place: the table is made again with its rows).
CREATE TABLE approvals_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('create_operator_credential', 'revoke_operator_credential', 'adjustment',
                                       'fund_agent', 'fare_table')),
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    requested_by BIGINT NOT NULL REFERENCES credentials (id),
    requested_person TEXT NOT NULL,
    decided_by BIGINT REFERENCES credentials (id),
    decided_person TEXT,
    result TEXT,
    created_at_us BIGINT NOT NULL,
    decided_at_us BIGINT,
    event_id BIGINT NOT NULL UNIQUE,
    decided_event_id BIGINT
);
INSERT INTO approvals_new SELECT id, kind, payload, status, requested_by, requested_person, decided_by, decided_person,
    result, created_at_us, decided_at_us, event_id, decided_event_id FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_new RENAME TO approvals;
CREATE INDEX approvals_status ON approvals (status, id);
