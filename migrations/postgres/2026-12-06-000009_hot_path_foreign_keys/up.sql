-- The journal's foreign keys cost more than everything else the writer does on PostgreSQL:
-- each checked row fires a trigger that looks up (and share-locks) its parent row, and a
-- payment writes eight such references (its entry's accounts, its postings' entry and
-- accounts). They guard nothing the ledger does not already hold: the writer is the only
-- writer of these tables and refuses any request that names an account it did not load,
-- and `kartu audit verify` finds a posting of no entry or of no account (as it finds any
-- row that differs from its leaf). Against someone who writes the database directly they
-- never held either: whoever can insert a posting can insert its entry first.
ALTER TABLE postings DROP CONSTRAINT postings_entry_seq_fkey;
ALTER TABLE postings DROP CONSTRAINT postings_account_id_fkey;
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_account_id_fkey;
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_counterparty_id_fkey;
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_related_seq_fkey;
