//! The blocklist table: one row per blocked JID.

use sqlx::Row;
use xmppd_storage::{Migration, Schema, Store};

pub const SCHEMA: Schema = Schema {
    name: "blocking",
    migrations: &[Migration {
        version: 2026120701,
        stem: "2026120701_blocklist",
        postgres: include_str!("migrations/postgres/2026120701_blocklist.sql"),
        sqlite: include_str!("migrations/sqlite/2026120701_blocklist.sql"),
    }],
};

/// The JIDs `account` blocks, sorted (byte order, as `AccountPolicy::blocks`
/// searches them).
pub async fn list(store: &Store, account: &str) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT blocked FROM blocklist WHERE jid = $1 ORDER BY blocked")
        .bind(account)
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(|row| row.try_get("blocked")).collect()
}

/// Adds `jids` (already listed ones are kept once).
pub async fn add(store: &Store, account: &str, jids: &[String]) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    for jid in jids {
        sqlx::query("INSERT INTO blocklist (jid, blocked) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(account)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Removes `jids`, or every entry when `jids` is `None`.
pub async fn remove(
    store: &Store,
    account: &str,
    jids: Option<&[String]>,
) -> Result<(), sqlx::Error> {
    let mut tx = store.pool().begin().await?;
    match jids {
        None => {
            sqlx::query("DELETE FROM blocklist WHERE jid = $1")
                .bind(account)
                .execute(&mut *tx)
                .await?;
        }
        Some(jids) => {
            for jid in jids {
                sqlx::query("DELETE FROM blocklist WHERE jid = $1 AND blocked = $2")
                    .bind(account)
                    .bind(jid)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    tx.commit().await
}
