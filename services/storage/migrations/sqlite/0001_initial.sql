-- STRICT makes SQLite reject values of the wrong type, as Postgres does.
-- Booleans are INTEGER 0/1: the sqlx Any driver cannot decode SQLite booleans.

CREATE TABLE accounts (
    jid        TEXT PRIMARY KEY,
    domain     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX accounts_by_domain ON accounts (domain, jid);

CREATE TABLE credentials (
    jid        TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    mechanism  TEXT NOT NULL,
    salt       BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (jid, mechanism)
) STRICT, WITHOUT ROWID;

CREATE TABLE roster_versions (
    jid     TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE roster_items (
    jid          TEXT NOT NULL,
    contact      TEXT NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      INTEGER NOT NULL,
    pending_in   INTEGER NOT NULL,
    PRIMARY KEY (jid, contact)
) STRICT, WITHOUT ROWID;

CREATE TABLE roster_groups (
    jid      TEXT NOT NULL,
    contact  TEXT NOT NULL,
    grp      TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (jid, contact, grp),
    FOREIGN KEY (jid, contact) REFERENCES roster_items (jid, contact) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- A rowid alias is enough for arrival order: a new rowid is always above the largest
-- one present, so AUTOINCREMENT and its bookkeeping table are not needed.
CREATE TABLE offline_messages (
    id        INTEGER PRIMARY KEY,
    jid       TEXT NOT NULL,
    stanza    BLOB NOT NULL,
    stored_at INTEGER NOT NULL
) STRICT;
CREATE INDEX offline_messages_by_jid ON offline_messages (jid, id);

CREATE TABLE last_activity (
    jid    TEXT PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    status TEXT NOT NULL
) STRICT, WITHOUT ROWID;
