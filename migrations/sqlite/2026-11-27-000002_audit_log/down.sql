DROP TABLE checkpoints;
DROP TABLE merkle_nodes;
DROP TABLE audit_leaves;
ALTER TABLE journal_entries DROP COLUMN leaf_index;
ALTER TABLE ledger_head DROP COLUMN tree_size;
