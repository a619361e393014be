-- Each subscriber and subscription gets a random link key when it is written, signed into its
-- links (unsubscribe, preferences) with its id. On SQLite a deleted row's id can be taken by the
-- next row; that row has a new key, so an old email's link does nothing to it. Rows from before
-- this migration keep NULL: the links already sent to them (which sign the id alone) stay valid.

ALTER TABLE subscribers ADD COLUMN link_key INTEGER;
ALTER TABLE subscriptions ADD COLUMN link_key INTEGER;
