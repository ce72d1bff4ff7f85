-- Maker-checker per person. An operator credential belongs to a named person; every
-- credential records the credential that created it (NULL: made on the host by `kartu
-- init` or `kartu operator add`). Existing operator credentials belong to a person named
-- like the credential.
ALTER TABLE credentials ADD COLUMN person TEXT;
ALTER TABLE credentials ADD COLUMN created_by BIGINT;
UPDATE credentials SET person = name WHERE role = 'operator';
-- Requests that need a second operator: creating or revoking an operator credential, an
-- adjustment, an agent float above the threshold. A status leaves `pending` once (the
-- UPDATE is guarded by status = 'pending'). event_id is the request's operator_action
-- event, decided_event_id the decision's.
CREATE TABLE approvals (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('create_operator_credential', 'revoke_operator_credential', 'adjustment', 'fund_agent')),
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
CREATE INDEX approvals_status ON approvals (status, id);
-- Adjustments still pending get their approval request.
INSERT INTO approvals (kind, payload, status, requested_by, requested_person, created_at_us, event_id)
SELECT 'adjustment',
       json_build_object('adjustment_id', a.id, 'account_id', a.account_id, 'amount_minor', a.amount_minor,
                   'currency', a.currency, 'reason', a.reason)::text,
       'pending', a.requested_by, COALESCE(c.person, c.name), a.created_at_us, a.event_id
FROM adjustments a JOIN credentials c ON c.id = a.requested_by
WHERE a.status = 'pending';
