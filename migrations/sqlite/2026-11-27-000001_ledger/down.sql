DROP TABLE postings;
DROP TABLE journal_entries;
DROP TABLE ledger_head;
DROP TABLE accounts;
