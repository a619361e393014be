-- What an erasure leaves of an address: its keyed hash (HMAC under BULLETIN_SECRET, so nothing
-- here names the address) and the lists it had left, a JSON array of list ids, so that an import
-- never adds it back to them. A suppression in force moves to the same hashed key in
-- suppressions. Changing BULLETIN_SECRET voids these hashes.
CREATE TABLE erasures (
    email_hash TEXT COLLATE "C" PRIMARY KEY,
    left_lists TEXT NOT NULL,
    erased_at  TIMESTAMPTZ NOT NULL
);
