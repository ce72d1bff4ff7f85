DROP INDEX audit_events_holder;
ALTER TABLE audit_events DROP COLUMN holder_key;
DROP TABLE offline_syncs;
DROP TABLE offline_payments;
DROP TABLE wallet_successors;
DROP TABLE wallet_debts;
