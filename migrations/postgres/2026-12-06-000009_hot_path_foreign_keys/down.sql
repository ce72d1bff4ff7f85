ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_related_seq_fkey
    FOREIGN KEY (related_seq) REFERENCES journal_entries (seq);
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_counterparty_id_fkey
    FOREIGN KEY (counterparty_id) REFERENCES accounts (id);
ALTER TABLE journal_entries ADD CONSTRAINT journal_entries_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES accounts (id);
ALTER TABLE postings ADD CONSTRAINT postings_account_id_fkey FOREIGN KEY (account_id) REFERENCES accounts (id);
ALTER TABLE postings ADD CONSTRAINT postings_entry_seq_fkey FOREIGN KEY (entry_seq) REFERENCES journal_entries (seq);
