-- Offline transit taps are held to their validator's offline limits like offline payments
-- (issue 18): an uploaded tap's row names the sync its record names and what it counted
-- (the validator's fare or the writer's charge of its ride, whichever is more). The writer
-- sums them with offline_payments per terminal, card and UTC day, and per sync. Both are
-- NULL for an online tap. The table's append-only triggers cover the new columns.
ALTER TABLE transit_taps ADD COLUMN sync_id BIGINT;
ALTER TABLE transit_taps ADD COLUMN offline_minor BIGINT CHECK (offline_minor >= 0);
CREATE INDEX transit_taps_sync ON transit_taps (credential_id, sync_id) WHERE sync_id IS NOT NULL;
