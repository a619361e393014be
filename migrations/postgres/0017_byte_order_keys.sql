-- Addresses compare as bytes: "C" is the order SQLite uses and the one the reader search walks,
-- and a "C" comparison is a memcmp where the database's default collation calls strcoll on
-- every index step (and gets no abbreviated keys). The unique index on email_key then serves
-- the prefix search too, so the extra index of migration 0013 goes: one index entry fewer per
-- new subscriber. Binary-coercible: the indexes are rebuilt, the tables are not rewritten.

DROP INDEX subscribers_key_prefix;
ALTER TABLE subscribers ALTER COLUMN email_key TYPE TEXT COLLATE "C";
ALTER TABLE suppressions ALTER COLUMN email_key TYPE TEXT COLLATE "C";
ALTER TABLE outbox ALTER COLUMN recipient TYPE TEXT COLLATE "C";
ALTER TABLE deliveries ALTER COLUMN recipient TYPE TEXT COLLATE "C";
