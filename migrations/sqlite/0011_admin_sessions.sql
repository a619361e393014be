-- The dashboard's server-side sessions: the cookie holds a random id, the table its SHA-256, the
-- digest of the admin token that opened it (so that removing a token ends its sessions), and the
-- session's CSRF token.

CREATE TABLE admin_sessions (
    id_hash      TEXT PRIMARY KEY,
    token_digest TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
