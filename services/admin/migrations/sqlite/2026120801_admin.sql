-- Accounts granted the admin role with `xmppd admin grant` (the
-- configuration's `admin.admins` hold it too, without a row).
CREATE TABLE admin_roles (
    jid        TEXT PRIMARY KEY,
    granted_at INTEGER NOT NULL
);

-- Login and API tokens: the secret is kept only as its SHA-256.
CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    jid         TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX admin_tokens_by_expiry ON admin_tokens (expires_at);

-- Every change made through the admin API or CLI: who, what, when.
CREATE TABLE admin_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
