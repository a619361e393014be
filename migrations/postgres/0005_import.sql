-- Imports: a subscriber's name, and the consent record an operator gives for imported addresses.

ALTER TABLE subscribers ADD COLUMN name TEXT;
ALTER TABLE subscriptions ADD COLUMN consent_note TEXT;
