//! The chat service's tables: rooms, affiliations, occupants, history.

use bytes::Bytes;
use sqlx::Row;
use xmppd_storage::{Migration, Schema, Store};

use super::room::{Affiliation, Occupant, Role, Room, RoomConfig};

pub const SCHEMA: Schema = Schema {
    name: "muc",
    migrations: &[Migration {
        version: 2026120802,
        stem: "2026120802_muc",
        postgres: include_str!("migrations/postgres/2026120802_muc.sql"),
        sqlite: include_str!("migrations/sqlite/2026120802_muc.sql"),
    }],
};

type Result<T> = std::result::Result<T, sqlx::Error>;

fn decode_error(error: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(error))
}

/// The room, its affiliations and occupants, or `None` if it does not exist.
pub async fn load(store: &Store, jid: &str) -> Result<Option<Room>> {
    let Some(row) = sqlx::query(
        "SELECT config, locked, subject, subject_from, secret FROM muc_rooms WHERE jid = $1",
    )
    .bind(jid)
    .fetch_optional(store.pool())
    .await?
    else {
        return Ok(None);
    };
    let config: String = row.try_get("config")?;
    let config: RoomConfig = serde_json::from_str(&config).map_err(decode_error)?;
    let mut room = Room {
        jid: jid.to_string(),
        config,
        locked: row.try_get::<i64, _>("locked")? != 0,
        subject: row.try_get("subject")?,
        subject_from: row.try_get("subject_from")?,
        secret: row.try_get("secret")?,
        affiliations: Vec::new(),
        occupants: Vec::new(),
    };
    let rows = sqlx::query("SELECT jid, affiliation FROM muc_affiliations WHERE room = $1")
        .bind(jid)
        .fetch_all(store.pool())
        .await?;
    for row in rows {
        let affiliation: String = row.try_get("affiliation")?;
        let affiliation = Affiliation::parse(&affiliation).unwrap_or(Affiliation::None);
        room.affiliations.push((row.try_get("jid")?, affiliation));
    }
    let rows = sqlx::query(
        "SELECT nick, jid, role, presence FROM muc_occupants WHERE room = $1 \
         ORDER BY joined_at, nick",
    )
    .bind(jid)
    .fetch_all(store.pool())
    .await?;
    for row in rows {
        let role: String = row.try_get("role")?;
        let presence: Vec<u8> = row.try_get("presence")?;
        room.occupants.push(Occupant {
            nick: row.try_get("nick")?,
            jid: row.try_get("jid")?,
            role: Role::parse(&role).unwrap_or(Role::Participant),
            presence: Bytes::from(presence),
        });
    }
    Ok(Some(room))
}

/// Creates the room with its first owner.
pub async fn create(store: &Store, room: &Room, owner: &str, now: i64) -> Result<()> {
    let config = serde_json::to_string(&room.config).map_err(decode_error)?;
    let mut tx = store.pool().begin().await?;
    sqlx::query(
        "INSERT INTO muc_rooms (jid, config, locked, subject, subject_from, secret, created_at) \
         VALUES ($1, $2, $3, '', '', $4, $5)",
    )
    .bind(&room.jid)
    .bind(config)
    .bind(i64::from(room.locked))
    .bind(&room.secret)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES ($1, $2, $3, '')",
    )
    .bind(&room.jid)
    .bind(owner)
    .bind(Affiliation::Owner.name())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Writes the room's configuration and lock.
pub async fn save_config(store: &Store, room: &Room) -> Result<()> {
    let config = serde_json::to_string(&room.config).map_err(decode_error)?;
    sqlx::query("UPDATE muc_rooms SET config = $2, locked = $3 WHERE jid = $1")
        .bind(&room.jid)
        .bind(config)
        .bind(i64::from(room.locked))
        .execute(store.pool())
        .await?;
    Ok(())
}

pub async fn set_subject(store: &Store, room: &str, subject: &str, from: &str) -> Result<()> {
    sqlx::query("UPDATE muc_rooms SET subject = $2, subject_from = $3 WHERE jid = $1")
        .bind(room)
        .bind(subject)
        .bind(from)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Deletes the room and everything of it.
pub async fn destroy(store: &Store, room: &str) -> Result<()> {
    sqlx::query("DELETE FROM muc_rooms WHERE jid = $1")
        .bind(room)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Sets `jid`'s affiliation; `None` removes it.
pub async fn set_affiliation(
    store: &Store,
    room: &str,
    jid: &str,
    affiliation: Affiliation,
    reason: &str,
) -> Result<()> {
    if affiliation == Affiliation::None {
        sqlx::query("DELETE FROM muc_affiliations WHERE room = $1 AND jid = $2")
            .bind(room)
            .bind(jid)
            .execute(store.pool())
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO muc_affiliations (room, jid, affiliation, reason) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (room, jid) DO UPDATE SET affiliation = $3, reason = $4",
    )
    .bind(room)
    .bind(jid)
    .bind(affiliation.name())
    .bind(reason)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The rooms `jid` owns, on every service.
pub async fn rooms_owned(store: &Store, jid: &str) -> Result<i64> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM muc_affiliations WHERE jid = $1 AND affiliation = 'owner'",
    )
    .bind(jid)
    .fetch_one(store.pool())
    .await?
    .try_get("n")
}

/// Adds or replaces an occupant.
pub async fn put_occupant(store: &Store, room: &str, occupant: &Occupant, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO muc_occupants (room, nick, jid, role, presence, joined_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (room, nick) DO UPDATE SET jid = $3, role = $4, presence = $5",
    )
    .bind(room)
    .bind(&occupant.nick)
    .bind(&occupant.jid)
    .bind(occupant.role.name())
    .bind(occupant.presence.to_vec())
    .bind(now)
    .execute(store.pool())
    .await?;
    Ok(())
}

pub async fn remove_occupant(store: &Store, room: &str, nick: &str) -> Result<()> {
    sqlx::query("DELETE FROM muc_occupants WHERE room = $1 AND nick = $2")
        .bind(room)
        .bind(nick)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Every room of the service `domain`, with its configuration, for the
/// service's disco#items.
pub async fn rooms(store: &Store, domain: &str) -> Result<Vec<(String, RoomConfig, bool)>> {
    let rows =
        sqlx::query("SELECT jid, config, locked FROM muc_rooms WHERE jid LIKE $1 ORDER BY jid")
            .bind(format!("%@{domain}"))
            .fetch_all(store.pool())
            .await?;
    let mut rooms = Vec::with_capacity(rows.len());
    for row in rows {
        let config: String = row.try_get("config")?;
        let config: RoomConfig = serde_json::from_str(&config).map_err(decode_error)?;
        rooms.push((
            row.try_get("jid")?,
            config,
            row.try_get::<i64, _>("locked")? != 0,
        ));
    }
    Ok(rooms)
}

/// A room as an administrator's list shows it.
pub struct RoomSummary {
    pub jid: String,
    pub config: RoomConfig,
    pub occupants: i64,
}

/// The rooms of every service whose JID sorts after `after`, by JID, at
/// most `limit`, with how many occupants each has.
pub async fn rooms_page(store: &Store, after: &str, limit: u32) -> Result<Vec<RoomSummary>> {
    let rows = sqlx::query(
        "SELECT jid, config, \
         (SELECT COUNT(*) FROM muc_occupants WHERE muc_occupants.room = muc_rooms.jid) AS occupants \
         FROM muc_rooms WHERE jid > $1 ORDER BY jid LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let config: String = row.try_get("config")?;
            Ok(RoomSummary {
                jid: row.try_get("jid")?,
                config: serde_json::from_str(&config).map_err(decode_error)?,
                occupants: row.try_get("occupants")?,
            })
        })
        .collect()
}

/// When the room was created (unix ms), or `None` if it does not exist: a
/// room destroyed and created again under the same JID is told apart.
pub async fn created_at(store: &Store, jid: &str) -> Result<Option<i64>> {
    sqlx::query("SELECT created_at FROM muc_rooms WHERE jid = $1")
        .bind(jid)
        .fetch_optional(store.pool())
        .await?
        .map(|row| row.try_get("created_at"))
        .transpose()
}

/// One groupchat message, as every occupant received it.
pub struct Archived {
    pub stanza_id: String,
    /// The sender's full JID and the message's id: a message handed to the
    /// room twice (after its replica died before acknowledging it) is kept
    /// once.
    pub origin: String,
    pub nick: String,
    pub sender: String,
    pub stamp: i64,
    pub stanza: Bytes,
}

/// Keeps `message` and trims the room's history to `keep`; returns the
/// message already kept under the same origin, if there is one.
pub async fn archive(
    store: &Store,
    room: &str,
    message: &Archived,
    keep: u32,
) -> Result<Option<Archived>> {
    let inserted = sqlx::query(
        "INSERT INTO muc_history (room, stanza_id, origin, nick, sender, stamp, stanza) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room, origin) DO NOTHING",
    )
    .bind(room)
    .bind(&message.stanza_id)
    .bind(&message.origin)
    .bind(&message.nick)
    .bind(&message.sender)
    .bind(message.stamp)
    .bind(message.stanza.to_vec())
    .execute(store.pool())
    .await?
    .rows_affected();
    if inserted == 0 {
        let row = sqlx::query(
            "SELECT stanza_id, origin, nick, sender, stamp, stanza FROM muc_history \
             WHERE room = $1 AND origin = $2",
        )
        .bind(room)
        .bind(&message.origin)
        .fetch_one(store.pool())
        .await?;
        return archived(&row).map(Some);
    }
    sqlx::query(
        "DELETE FROM muc_history WHERE room = $1 AND id <= \
         (SELECT id FROM muc_history WHERE room = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(room)
    .bind(i64::from(keep))
    .execute(store.pool())
    .await?;
    Ok(None)
}

/// The room's last `limit` messages since `since` (unix ms), oldest first.
pub async fn history(store: &Store, room: &str, since: i64, limit: u32) -> Result<Vec<Archived>> {
    let rows = sqlx::query(
        "SELECT stanza_id, origin, nick, sender, stamp, stanza FROM muc_history \
         WHERE room = $1 AND stamp >= $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(room)
    .bind(since)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    let mut messages = rows.iter().map(archived).collect::<Result<Vec<_>>>()?;
    messages.reverse();
    Ok(messages)
}

fn archived(row: &sqlx::any::AnyRow) -> Result<Archived> {
    let stanza: Vec<u8> = row.try_get("stanza")?;
    Ok(Archived {
        stanza_id: row.try_get("stanza_id")?,
        origin: row.try_get("origin")?,
        nick: row.try_get("nick")?,
        sender: row.try_get("sender")?,
        stamp: row.try_get("stamp")?,
        stanza: Bytes::from(stanza),
    })
}
