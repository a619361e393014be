-- List counts start from the hour, not the day (see 0014): the changes since the start counted
-- per view grew all day long, so a busy day made every list view slower by the hour. A status
-- change now records the row's status when the UTC hour of the change began, and the counts at
-- an hour's start are stored once per hour (only the current hour's are kept). A row changed
-- earlier in the hour of this migration holds its status at the day's start instead: that hour's
-- counts may be off by such rows until the next hour's full count.
ALTER TABLE subscriptions RENAME COLUMN status_at_day_start TO status_at_hour_start;
DROP TABLE count_snapshots;
CREATE TABLE count_snapshots (
    hour_start   TEXT NOT NULL,
    list_id      BIGINT NOT NULL,
    pending      BIGINT NOT NULL,
    confirmed    BIGINT NOT NULL,
    unsubscribed BIGINT NOT NULL,
    PRIMARY KEY (hour_start, list_id)
);
