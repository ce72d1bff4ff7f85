-- The audit log: every journal entry is a leaf of one append-only RFC 9162 Merkle tree.
ALTER TABLE ledger_head ADD COLUMN tree_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE journal_entries ADD COLUMN leaf_index BIGINT;
-- No index on leaf_index: audit_leaves' primary key already makes leaf indexes unique,
-- and one index less per entry keeps the write path short.

CREATE TABLE audit_leaves (
    leaf_index BIGINT PRIMARY KEY CHECK (leaf_index >= 0),
    kind TEXT NOT NULL,
    leaf BYTEA NOT NULL,
    leaf_hash BYTEA NOT NULL CHECK (length(leaf_hash) = 32)
);
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL CHECK (level BETWEEN 4 AND 63),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    hash BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);
CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY CHECK (tree_size > 0),
    root BYTEA NOT NULL CHECK (length(root) = 32),
    time_us BIGINT NOT NULL,
    note TEXT NOT NULL
);

CREATE TRIGGER audit_leaves_append_only BEFORE UPDATE OR DELETE ON audit_leaves
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER merkle_nodes_append_only BEFORE UPDATE OR DELETE ON merkle_nodes
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER merkle_nodes_no_truncate BEFORE TRUNCATE ON merkle_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION kartu_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION kartu_append_only();
