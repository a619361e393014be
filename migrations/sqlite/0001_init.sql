-- Core schema: lists, subscribers, confirmations, subscriptions, the outbox, settings.
-- Times are RFC 3339 UTC text written by the application (lexicographic order = time order).

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE lists (
    id          INTEGER PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

CREATE TABLE subscribers (
    id                   INTEGER PRIMARY KEY,
    email                TEXT NOT NULL,
    email_key            TEXT NOT NULL UNIQUE,
    created_at           TEXT NOT NULL,
    last_confirmation_at TEXT
);

CREATE TABLE confirmations (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
);
CREATE INDEX confirmations_subscriber ON confirmations (subscriber_id, created_at);
CREATE INDEX confirmations_expiry ON confirmations (expires_at);

-- The lists one confirmation link confirms: exactly those its email named.
CREATE TABLE confirmation_lists (
    confirmation_id INTEGER NOT NULL REFERENCES confirmations (id) ON DELETE CASCADE,
    list_id         INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    PRIMARY KEY (confirmation_id, list_id)
);

CREATE TABLE subscriptions (
    id                 INTEGER PRIMARY KEY,
    list_id            INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    subscriber_id      INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
    created_at         TEXT NOT NULL,
    consent_at         TEXT NOT NULL,
    consent_ip         TEXT,
    consent_user_agent TEXT,
    consent_page       TEXT,
    confirmed_at       TEXT,
    confirm_ip         TEXT,
    confirm_user_agent TEXT,
    unsubscribed_at    TEXT,
    UNIQUE (list_id, subscriber_id)
);
CREATE INDEX subscriptions_list_status ON subscriptions (list_id, status, id);
CREATE INDEX subscriptions_subscriber ON subscriptions (subscriber_id);
CREATE INDEX subscriptions_pending_age ON subscriptions (consent_at) WHERE status = 'pending';

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    text_body       TEXT,
    html_body       TEXT,
    headers         TEXT NOT NULL DEFAULT '[]',
    subscription_id INTEGER REFERENCES subscriptions (id) ON DELETE SET NULL,
    status          TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_until     TEXT,
    leased_by       TEXT,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    sent_at         TEXT
);
CREATE INDEX outbox_ready ON outbox (priority, next_attempt_at, id) WHERE status = 'queued';
