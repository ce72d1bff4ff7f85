ALTER TABLE cards DROP COLUMN key_version;
