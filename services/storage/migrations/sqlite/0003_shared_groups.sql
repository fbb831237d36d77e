-- Shared roster groups: every member sees every other member of each of its groups in
-- its roster, and their presence, without subscribing (src/groups.rs). Members are
-- accounts, so deleting an account takes it out of its groups.

CREATE TABLE shared_groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE shared_group_members (
    grp TEXT NOT NULL REFERENCES shared_groups (name) ON DELETE CASCADE,
    jid TEXT NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    PRIMARY KEY (grp, jid)
) STRICT, WITHOUT ROWID;
-- A member's groups, for its roster and presence.
CREATE INDEX shared_group_members_by_jid ON shared_group_members (jid, grp);
