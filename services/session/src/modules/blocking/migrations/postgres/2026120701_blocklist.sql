-- XEP-0191: the JIDs each account blocks, normalised.
CREATE TABLE blocklist (
    jid     TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    blocked TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (jid, blocked)
);
