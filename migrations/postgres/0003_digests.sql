-- Digests: built once from the list's items, sent as one delivery per confirmed subscriber.

CREATE TABLE digests (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id         BIGINT NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'done', 'cancelled')),
    subject         TEXT NOT NULL,
    -- The parts shared by every recipient, rendered once; `placeholder` marks where each
    -- recipient's own values go (random per digest, so feed content cannot forge it).
    html_body       TEXT NOT NULL,
    text_body       TEXT NOT NULL,
    placeholder     TEXT NOT NULL,
    items           BIGINT NOT NULL,
    recipients      BIGINT NOT NULL DEFAULT 0,
    -- Delivery rows are written in chunks after the digest row; the cursor lets a restart
    -- finish the job, and `enqueued` says it is complete.
    enqueue_cursor  BIGINT NOT NULL DEFAULT 0,
    enqueued        BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    request_hash    TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    started_at      TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ
);
CREATE UNIQUE INDEX digests_idempotency ON digests (list_id, idempotency_key);
CREATE INDEX digests_list ON digests (list_id, id);

CREATE TABLE digest_items (
    digest_id BIGINT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    item_id   BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    PRIMARY KEY (digest_id, item_id)
);
CREATE INDEX digest_items_item ON digest_items (item_id);

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    digest_id       BIGINT NOT NULL REFERENCES digests (id) ON DELETE CASCADE,
    subscription_id BIGINT NOT NULL,
    recipient       TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_until     TIMESTAMPTZ,
    leased_by       TEXT,
    last_error      TEXT,
    sent_at         TIMESTAMPTZ,
    UNIQUE (digest_id, subscription_id)
);
CREATE INDEX deliveries_ready ON deliveries (next_attempt_at, id) WHERE status = 'queued';
CREATE INDEX deliveries_digest_status ON deliveries (digest_id, status);
CREATE INDEX deliveries_subscription ON deliveries (subscription_id) WHERE status = 'queued';
