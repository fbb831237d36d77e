-- Shared roster groups: every member sees every other member of each of its groups in
-- its roster, and their presence, without subscribing (src/groups.rs). Members are
-- accounts, so deleting an account takes it out of its groups.

CREATE TABLE shared_groups (
    name        TEXT COLLATE "C" PRIMARY KEY,
    description TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE shared_group_members (
    grp TEXT COLLATE "C" NOT NULL REFERENCES shared_groups (name) ON DELETE CASCADE,
    jid TEXT COLLATE "C" NOT NULL REFERENCES accounts (jid) ON DELETE CASCADE,
    PRIMARY KEY (grp, jid)
);
-- A member's groups, for its roster and presence.
CREATE INDEX shared_group_members_by_jid ON shared_group_members (jid, grp);
