-- A list's digest schedule, and what each of its slots came to. A process claims slots by moving
-- `next_slot` forward with a compare-and-set, and records each slot once (its primary key), so
-- several processes and restarts never send a slot twice.

CREATE TABLE schedules (
    list_id       INTEGER PRIMARY KEY REFERENCES lists (id) ON DELETE CASCADE,
    cron          TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    max_items     INTEGER NOT NULL,
    min_items     INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- Where the next digest's items start: the last slot that queued one, or the creation.
    covered_until TEXT NOT NULL,
    -- The earliest slot not yet decided.
    next_slot     TEXT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_slot);

CREATE TABLE schedule_runs (
    list_id    INTEGER NOT NULL REFERENCES lists (id) ON DELETE CASCADE,
    slot       TEXT NOT NULL,
    -- `claimed`: taken by a process, its digest not yet queued (a crash leaves it for the next).
    outcome    TEXT NOT NULL CHECK (outcome IN ('claimed', 'queued', 'skipped_no_items',
                                                'skipped_no_recipients', 'missed')),
    -- The `since` of the slot's digest, fixed when claimed so that a retry asks the same.
    since      TEXT NOT NULL,
    digest_id  INTEGER REFERENCES digests (id) ON DELETE SET NULL,
    decided_at TEXT NOT NULL,
    PRIMARY KEY (list_id, slot)
);
CREATE INDEX schedule_runs_claimed ON schedule_runs (slot) WHERE outcome = 'claimed';
