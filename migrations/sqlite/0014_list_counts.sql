-- Counts per list and status without counting every row per view, and without a counter row
-- that every signup would update: each status change records, in its own row, when it happened
-- and what the row's status was when that UTC day began ('none': the row did not exist then).
-- A day's counts at its start are stored once; the live counts are those plus the rows changed
-- since (one index range), plus the rows deleted since (count_adjustments, written by the
-- deletes). Rows from before this migration count as unchanged.

ALTER TABLE subscriptions ADD COLUMN changed_at TEXT;
ALTER TABLE subscriptions ADD COLUMN status_at_day_start TEXT;
CREATE INDEX subscriptions_changed ON subscriptions (changed_at) WHERE changed_at IS NOT NULL;

CREATE TABLE count_snapshots (
    day          TEXT NOT NULL,
    list_id      INTEGER NOT NULL,
    pending      INTEGER NOT NULL,
    confirmed    INTEGER NOT NULL,
    unsubscribed INTEGER NOT NULL,
    PRIMARY KEY (day, list_id)
);

CREATE TABLE count_adjustments (
    id INTEGER PRIMARY KEY,
    list_id INTEGER NOT NULL,
    status  TEXT NOT NULL,
    delta   INTEGER NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX count_adjustments_at ON count_adjustments (at);
