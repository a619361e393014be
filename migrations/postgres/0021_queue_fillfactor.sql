-- A claim writes only the lease (lease_until, leased_by), which no index covers: with room left on
-- each page the new row version stays on it (a heap-only update) and no index gets an entry.
-- Packed full, every claim of a row wrote a new entry in each of the queue's indexes.
ALTER TABLE outbox SET (fillfactor = 70);
ALTER TABLE deliveries SET (fillfactor = 70);
