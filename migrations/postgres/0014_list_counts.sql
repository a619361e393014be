-- Counts per list and status without counting every row per view, and without a counter row
-- that every signup would update: each status change records, in its own row, when it happened
-- and what the row's status was when that UTC day began ('none': the row did not exist then).
-- A day's counts at its start are stored once; the live counts are those plus the rows changed
-- since (one index range), plus the rows deleted since (count_adjustments, written by the
-- deletes). Rows from before this migration count as unchanged.

ALTER TABLE subscriptions ADD COLUMN changed_at TIMESTAMPTZ;
ALTER TABLE subscriptions ADD COLUMN status_at_day_start TEXT;
CREATE INDEX subscriptions_changed ON subscriptions (changed_at) WHERE changed_at IS NOT NULL;

CREATE TABLE count_snapshots (
    day          TEXT NOT NULL,
    list_id      BIGINT NOT NULL,
    pending      BIGINT NOT NULL,
    confirmed    BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    PRIMARY KEY (day, list_id)
);

CREATE TABLE count_adjustments (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id BIGINT NOT NULL,
    status  TEXT NOT NULL,
    delta   BIGINT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX count_adjustments_at ON count_adjustments (at);
