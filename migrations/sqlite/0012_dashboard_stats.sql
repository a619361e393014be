-- What the dashboard's figures read: indexes on the time columns (so a day or the last 24 h is
-- a range, never a scan), the time a message failed, and the finished days' counts. A day's
-- counts are stored once the day is over: no counter row that every signup or send updates.

ALTER TABLE outbox ADD COLUMN failed_at TEXT;
ALTER TABLE deliveries ADD COLUMN failed_at TEXT;

CREATE INDEX subscriptions_list_consent ON subscriptions (list_id, consent_at);
CREATE INDEX subscriptions_list_confirmed ON subscriptions (list_id, confirmed_at) WHERE confirmed_at IS NOT NULL;
CREATE INDEX subscriptions_list_unsubscribed ON subscriptions (list_id, unsubscribed_at) WHERE unsubscribed_at IS NOT NULL;
CREATE INDEX deliveries_sent_at ON deliveries (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX deliveries_failed_at ON deliveries (failed_at) WHERE failed_at IS NOT NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_failed_at ON outbox (failed_at) WHERE failed_at IS NOT NULL;

-- One finished UTC day of one series: 'list:<id>' (confirmed, unsubscribed) or 'messages'
-- (sent, failed).
CREATE TABLE daily_stats (
    scope TEXT NOT NULL,
    day   TEXT NOT NULL,
    a     INTEGER NOT NULL,
    b     INTEGER NOT NULL,
    PRIMARY KEY (scope, day)
);
