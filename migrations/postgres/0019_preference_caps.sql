-- The preference centre's emails of a link to an address: at most one per 5 minutes and five per
-- UTC day, counted apart from the confirmation emails' caps (migration 0006).
ALTER TABLE subscribers ADD COLUMN preference_mail_at TIMESTAMPTZ;
ALTER TABLE subscribers ADD COLUMN preference_day_start TIMESTAMPTZ;
ALTER TABLE subscribers ADD COLUMN preference_day_count INTEGER NOT NULL DEFAULT 0;
