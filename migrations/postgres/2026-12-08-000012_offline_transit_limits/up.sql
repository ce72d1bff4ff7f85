-- Offline transit taps' limits; see the SQLite migration for the comments.
ALTER TABLE transit_taps ADD COLUMN sync_id BIGINT;
ALTER TABLE transit_taps ADD COLUMN offline_minor BIGINT CHECK (offline_minor >= 0);
CREATE INDEX transit_taps_sync ON transit_taps (credential_id, sync_id) WHERE sync_id IS NOT NULL;
