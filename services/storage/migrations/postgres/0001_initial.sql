-- JID columns use the "C" collation so that ORDER BY is byte order, as in SQLite,
-- and comparisons skip locale rules.

CREATE TABLE accounts (
    jid        TEXT COLLATE "C" PRIMARY KEY,
    domain     TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX accounts_by_domain ON accounts (domain, jid);

CREATE TABLE credentials (
    jid        TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    mechanism  TEXT NOT NULL,
    salt       BYTEA NOT NULL,
    iterations BIGINT NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    PRIMARY KEY (jid, mechanism)
);

CREATE TABLE roster_versions (
    jid     TEXT COLLATE "C" PRIMARY KEY,
    version BIGINT NOT NULL
);

CREATE TABLE roster_items (
    jid          TEXT COLLATE "C" NOT NULL,
    contact      TEXT COLLATE "C" NOT NULL,
    name         TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      SMALLINT NOT NULL,
    pending_in   SMALLINT NOT NULL,
    PRIMARY KEY (jid, contact)
);

CREATE TABLE roster_groups (
    jid      TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    grp      TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (jid, contact, grp),
    FOREIGN KEY (jid, contact) REFERENCES roster_items (jid, contact) ON DELETE CASCADE
);

CREATE TABLE offline_messages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jid       TEXT COLLATE "C" NOT NULL,
    stanza    BYTEA NOT NULL,
    stored_at BIGINT NOT NULL
);
CREATE INDEX offline_messages_by_jid ON offline_messages (jid, id);

CREATE TABLE last_activity (
    jid    TEXT COLLATE "C" PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    status TEXT NOT NULL
);
