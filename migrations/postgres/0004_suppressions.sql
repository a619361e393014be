-- Addresses that get nothing more: hard bounces (5xx to RCPT TO) and manual entries.

CREATE TABLE suppressions (
    email_key  TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    reason     TEXT NOT NULL CHECK (reason IN ('bounce', 'manual')),
    detail     TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
