DROP INDEX transit_taps_sync;
ALTER TABLE transit_taps DROP COLUMN offline_minor;
ALTER TABLE transit_taps DROP COLUMN sync_id;
