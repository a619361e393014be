-- Feeds a list draws its items from, and the items themselves.

CREATE TABLE feeds (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id              BIGINT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    url                  TEXT NOT NULL,
    kind                 TEXT NOT NULL CHECK (kind IN ('poll', 'push')),
    poll_interval_secs   BIGINT NOT NULL,
    etag                 TEXT,
    last_modified        TEXT,
    last_polled_at       TIMESTAMPTZ,
    last_error           TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    next_poll_at         TIMESTAMPTZ NOT NULL,
    lease_until          TIMESTAMPTZ,
    leased_by            TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    UNIQUE (list_id, url)
);
CREATE INDEX feeds_due ON feeds (next_poll_at) WHERE kind = 'poll';

CREATE TABLE items (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id      BIGINT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    feed_id      BIGINT REFERENCES feeds (id) ON DELETE SET NULL,
    key          TEXT NOT NULL,
    title        TEXT NOT NULL,
    url          TEXT,
    summary_html TEXT NOT NULL DEFAULT '',
    summary_text TEXT NOT NULL DEFAULT '',
    published_at TIMESTAMPTZ NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (feed_id, key)
);
CREATE INDEX items_list_published ON items (list_id, published_at);
