-- The registry: who and what the ledger's accounts belong to. Every creation and change is
-- first an operator_action event in the audit log (event_id); a change is applied only
-- when its event is newer than the row's last (status_event_id), so a retried request
-- re-applies exactly what was logged and never undoes a later change.
CREATE TABLE holders (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    nik_hash BYTEA NOT NULL UNIQUE,
    categories TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE cards (
    id BIGSERIAL PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE CHECK (length(uid) = 14),
    holder_id BIGINT NOT NULL REFERENCES holders (id),
    account_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
    status TEXT NOT NULL CHECK (status IN ('active', 'blocked', 'replaced')),
    block_reason TEXT,
    replaced_by BIGINT REFERENCES cards (id),
    created_at_us BIGINT NOT NULL,
    updated_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE,
    status_event_id BIGINT NOT NULL
);
CREATE INDEX cards_holder ON cards (holder_id);
CREATE TABLE merchants (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    fee_rate TEXT NOT NULL,
    account_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE service_points (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    policy TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE agents (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    account_id BIGINT NOT NULL UNIQUE REFERENCES accounts (id),
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
CREATE TABLE credentials (
    id BIGSERIAL PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('operator', 'merchant_terminal', 'service_point', 'top_up_agent', 'kiosk', 'auditor')),
    name TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    merchant_id BIGINT REFERENCES merchants (id),
    service_point_id BIGINT REFERENCES service_points (id),
    agent_id BIGINT REFERENCES agents (id),
    public_key TEXT,
    offline_limits TEXT,
    created_at_us BIGINT NOT NULL,
    revoked_at_us BIGINT,
    event_id BIGINT NOT NULL UNIQUE,
    revoked_event_id BIGINT
);
CREATE TABLE adjustments (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id),
    amount_minor BIGINT NOT NULL CHECK (amount_minor <> 0),
    currency TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by BIGINT NOT NULL REFERENCES credentials (id),
    approved_by BIGINT REFERENCES credentials (id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'posted', 'rejected')),
    entry_seq BIGINT,
    created_at_us BIGINT NOT NULL,
    event_id BIGINT NOT NULL UNIQUE
);
