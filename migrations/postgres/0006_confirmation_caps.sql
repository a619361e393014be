-- Per-address cap on confirmation emails: at most N per day, counted in a window that starts
-- with the first email of the day (list bombing sends a victim nothing beyond it).

ALTER TABLE subscribers ADD COLUMN confirmations_day_start TIMESTAMPTZ;
ALTER TABLE subscribers ADD COLUMN confirmations_day_count INTEGER NOT NULL DEFAULT 0;
