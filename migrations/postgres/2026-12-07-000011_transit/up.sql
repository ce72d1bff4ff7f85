-- Public transport (issue 18). Routes (with their stops, in order) belong to a transit
-- operator (a merchant of category transit); a validator is a merchant_terminal credential
-- bound to a route (on a vehicle) or to a stop of it (a station gate). Fare tables take
-- effect at a time no earlier than their approval and are never changed: a ride is priced
-- by the table in force when it boarded. Taps and the entries each ride made are journal
-- rows: the writer prices a card's taps again from them and posts only the differences.
CREATE TABLE transit_routes (
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
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
CREATE TRIGGER transit_routes_append_only BEFORE UPDATE OR DELETE ON transit_routes
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_routes_no_truncate BEFORE TRUNCATE ON transit_routes
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_validators_append_only BEFORE UPDATE OR DELETE ON transit_validators
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_validators_no_truncate BEFORE TRUNCATE ON transit_validators
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER fare_tables_append_only BEFORE UPDATE OR DELETE ON fare_tables
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER fare_tables_no_truncate BEFORE TRUNCATE ON fare_tables
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_taps_append_only BEFORE UPDATE OR DELETE ON transit_taps
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_taps_no_truncate BEFORE TRUNCATE ON transit_taps
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_entries_append_only BEFORE UPDATE OR DELETE ON transit_entries
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER transit_entries_no_truncate BEFORE TRUNCATE ON transit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
-- A fare table is a request a second operator approves.
ALTER TABLE approvals DROP CONSTRAINT approvals_kind_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_kind_check CHECK (kind IN ('create_operator_credential',
    'revoke_operator_credential', 'adjustment', 'fund_agent', 'fare_table'));
