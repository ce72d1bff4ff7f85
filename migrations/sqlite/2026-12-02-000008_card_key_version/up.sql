-- The card key version a card was personalised with (issue 13): a tap that verifies only
-- with an older version than the card's is refused. Cards issued before this knew none (0).
ALTER TABLE cards ADD COLUMN key_version INTEGER NOT NULL DEFAULT 0;
