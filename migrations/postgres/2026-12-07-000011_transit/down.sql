DROP TABLE transit_entries;
DROP TABLE transit_taps;
DROP TABLE fare_tables;
DROP TABLE transit_validators;
DROP TABLE transit_routes;
ALTER TABLE approvals DROP CONSTRAINT approvals_kind_check;
DELETE FROM approvals WHERE kind = 'fare_table';
ALTER TABLE approvals ADD CONSTRAINT approvals_kind_check CHECK (kind IN ('create_operator_credential',
    'revoke_operator_credential', 'adjustment', 'fund_agent'));
