-- XEP-0045 rooms: configuration (JSON of `RoomConfig`), whether the room
-- awaits its owner's configuration, its subject, and the secret its
-- occupant ids (XEP-0421) are derived with.
CREATE TABLE muc_rooms (
    jid          TEXT PRIMARY KEY,
    config       TEXT NOT NULL,
    locked       INTEGER NOT NULL,
    subject      TEXT NOT NULL,
    subject_from TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Affiliations (owner, admin, member, outcast) by bare JID.
CREATE TABLE muc_affiliations (
    room        TEXT NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    reason      TEXT NOT NULL,
    PRIMARY KEY (room, jid)
) STRICT, WITHOUT ROWID;
CREATE INDEX muc_affiliations_by_jid ON muc_affiliations (jid, affiliation);

-- Who is in a room now: any replica can read it, so a room's new owner
-- after a replica's death knows its occupants.
CREATE TABLE muc_occupants (
    room      TEXT NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    nick      TEXT NOT NULL,
    jid       TEXT NOT NULL,
    role      TEXT NOT NULL,
    presence  BLOB NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room, nick)
) STRICT, WITHOUT ROWID;
CREATE INDEX muc_occupants_by_jid ON muc_occupants (room, jid);

-- Discussion history, as delivered (without `to`): the rows a join's
-- history and archive queries (XEP-0313) read, by room in arrival order.
CREATE TABLE muc_history (
    id          INTEGER PRIMARY KEY,
    room        TEXT NOT NULL REFERENCES muc_rooms (jid) ON DELETE CASCADE,
    stanza_id   TEXT NOT NULL,
    origin      TEXT NOT NULL,
    nick        TEXT NOT NULL,
    sender      TEXT NOT NULL,
    stamp       INTEGER NOT NULL,
    stanza      BLOB NOT NULL
) STRICT;
CREATE INDEX muc_history_by_room ON muc_history (room, id);
CREATE UNIQUE INDEX muc_history_by_origin ON muc_history (room, origin);
