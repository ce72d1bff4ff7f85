DROP TABLE approvals;
ALTER TABLE credentials DROP COLUMN created_by;
ALTER TABLE credentials DROP COLUMN person;
