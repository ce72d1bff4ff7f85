DROP TABLE card_debts;
DROP TABLE offline_records;
DROP TABLE offline_heads;
