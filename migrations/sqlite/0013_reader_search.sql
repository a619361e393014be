-- What the dashboard's reader pages read: addresses by domain (an index on the part after the
-- '@'; the address prefix search uses the unique index on email_key), and one reader's
-- deliveries and emails, newest first.

CREATE INDEX subscribers_domain ON subscribers (substr(email_key, instr(email_key, '@') + 1));

-- Every delivery of a subscription, not only the queued ones (which unsubscribing cancels).
DROP INDEX deliveries_subscription;
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);
CREATE INDEX outbox_recipient ON outbox (recipient, id);
