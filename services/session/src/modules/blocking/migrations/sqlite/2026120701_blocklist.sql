-- XEP-0191: the JIDs each account blocks, normalised.
CREATE TABLE blocklist (
    jid     TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    blocked TEXT NOT NULL,
    PRIMARY KEY (jid, blocked)
) WITHOUT ROWID;
