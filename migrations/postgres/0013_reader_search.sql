-- What the dashboard's reader pages read: addresses by prefix (byte order, as SQLite's), by
-- domain (an index on the part after the '@'), and one reader's deliveries and emails, newest
-- first.

CREATE INDEX subscribers_key_prefix ON subscribers (email_key COLLATE "C");
CREATE INDEX subscribers_domain ON subscribers (split_part(email_key, '@', 2), id);

-- Every delivery of a subscription, not only the queued ones (which unsubscribing cancels).
DROP INDEX deliveries_subscription;
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);
CREATE INDEX outbox_recipient ON outbox (recipient, id);
