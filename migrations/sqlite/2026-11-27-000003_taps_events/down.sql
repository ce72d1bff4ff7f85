DROP TABLE audit_events;
DROP TABLE card_replays;
DROP TABLE card_counters;
