-- The last email of a reader's data (asked for on the preference page): at most one per 24 hours.
ALTER TABLE subscribers ADD COLUMN data_mail_at TEXT;
