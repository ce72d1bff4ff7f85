-- The audit log: every journal entry is a leaf of one append-only RFC 9162 Merkle tree.
ALTER TABLE ledger_head ADD COLUMN tree_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE journal_entries ADD COLUMN leaf_index BIGINT;
-- No index on leaf_index: audit_leaves' primary key already makes leaf indexes unique,
-- and one index less per entry keeps the write path short.

-- leaf_hash = SHA-256(0x00 || leaf); leaf is the canonical encoding of docs/AUDIT.md.
CREATE TABLE audit_leaves (
    leaf_index INTEGER PRIMARY KEY CHECK (leaf_index >= 0),
    kind TEXT NOT NULL,
    leaf BLOB NOT NULL,
    leaf_hash BLOB NOT NULL CHECK (length(leaf_hash) = 32)
);
-- Hashes of perfect subtrees at level >= 4 (lower levels are folded from the leaf
-- hashes when read): node (level, idx) covers leaves
-- [idx * 2^level, (idx + 1) * 2^level). Level 0 is audit_leaves.leaf_hash.
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL CHECK (level BETWEEN 4 AND 63),
    idx BIGINT NOT NULL CHECK (idx >= 0),
    hash BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
-- Signed checkpoints (C2SP tlog-checkpoint in a signed note), kept forever.
CREATE TABLE checkpoints (
    tree_size BIGINT PRIMARY KEY CHECK (tree_size > 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    time_us BIGINT NOT NULL,
    note TEXT NOT NULL
);

CREATE TRIGGER audit_leaves_no_update BEFORE UPDATE ON audit_leaves
BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END;
CREATE TRIGGER audit_leaves_no_delete BEFORE DELETE ON audit_leaves
BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only'); END;
CREATE TRIGGER merkle_nodes_no_update BEFORE UPDATE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER merkle_nodes_no_delete BEFORE DELETE ON merkle_nodes
BEGIN SELECT RAISE(ABORT, 'merkle_nodes is append-only'); END;
CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints is append-only'); END;
