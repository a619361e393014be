-- A confirmation email is queued as its parameters (the token, the lists' names, the link's
-- lifetime) and rendered when sent: an outbox row of a hundred bytes instead of kilobytes, which
-- is most of what a signup writes. Like the bodies, the parameters are cleared once sent.

ALTER TABLE outbox ADD COLUMN params TEXT;
