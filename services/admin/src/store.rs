//! The admin API's own tables: who holds the admin role, the tokens, the
//! audit log. Migrated like an account module's (`xmppd_storage::Schema`).

use sqlx::Row;
use sqlx::any::AnyRow;
use xmppd_storage::{Migration, Schema, Store};

pub const SCHEMA: Schema = Schema {
    name: "admin",
    migrations: &[Migration {
        version: 2026120801,
        stem: "2026120801_admin",
        postgres: include_str!("../migrations/postgres/2026120801_admin.sql"),
        sqlite: include_str!("../migrations/sqlite/2026120801_admin.sql"),
    }],
};

/// Whether `jid` was granted the admin role (the configuration's admins are
/// not in the table).
pub async fn has_role(store: &Store, jid: &str) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SELECT 1 FROM admin_roles WHERE jid = $1")
        .bind(jid)
        .fetch_optional(store.pool())
        .await?;
    Ok(row.is_some())
}

/// Grants the role; false if `jid` held it already.
pub async fn grant(store: &Store, jid: &str, at_ms: i64) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO admin_roles (jid, granted_at) VALUES ($1, $2) ON CONFLICT (jid) DO NOTHING",
    )
    .bind(jid)
    .bind(at_ms)
    .execute(store.pool())
    .await?
    .rows_affected();
    Ok(inserted > 0)
}

/// Takes the role back; false if `jid` did not hold it.
pub async fn revoke_role(store: &Store, jid: &str) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM admin_roles WHERE jid = $1")
        .bind(jid)
        .execute(store.pool())
        .await?
        .rows_affected();
    Ok(deleted > 0)
}

/// A token as stored: never its secret, only the secret's hash.
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub id: String,
    pub secret_hash: String,
    pub jid: String,
    /// `login` or `api`.
    pub kind: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, secret_hash, jid, kind, name, created_at, expires_at, revoked_at";

fn token_from_row(row: &AnyRow) -> Result<TokenRow, sqlx::Error> {
    Ok(TokenRow {
        id: row.try_get("id")?,
        secret_hash: row.try_get("secret_hash")?,
        jid: row.try_get("jid")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub async fn insert_token(store: &Store, token: &TokenRow) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO admin_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)"
    ))
    .bind(&token.id)
    .bind(&token.secret_hash)
    .bind(&token.jid)
    .bind(&token.kind)
    .bind(&token.name)
    .bind(token.created_at)
    .bind(token.expires_at)
    .execute(store.pool())
    .await?;
    Ok(())
}

pub async fn token(store: &Store, id: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.pool())
    .await?
    .as_ref()
    .map(token_from_row)
    .transpose()
}

/// The API tokens (not login tokens), in id order after `after`.
pub async fn api_tokens_page(
    store: &Store,
    after: &str,
    limit: u32,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE kind = 'api' AND id > $1 \
         ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(token_from_row).collect()
}

/// Marks a token revoked; false if there is no such token or it was revoked
/// already.
pub async fn revoke_token(store: &Store, id: &str, at_ms: i64) -> Result<bool, sqlx::Error> {
    let updated =
        sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at_ms)
            .execute(store.pool())
            .await?
            .rows_affected();
    Ok(updated > 0)
}

/// Forgets tokens that expired before `before_ms`: until then a caller with
/// one is told it expired rather than that it is unknown.
pub async fn forget_expired(store: &Store, before_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM admin_tokens WHERE expires_at < $1")
        .bind(before_ms)
        .execute(store.pool())
        .await?;
    Ok(())
}

/// One entry of the audit log.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    /// The administrator's bare JID, or `cli` for the command line working
    /// on the database.
    pub actor: String,
    /// What was done, e.g. `account.create` (`docs/admin.md` lists them).
    pub action: String,
    /// What it was done to (a JID, a token id), empty for the whole server.
    pub target: String,
    /// Details as JSON text (never a password or token secret).
    pub detail: String,
}

pub async fn record(
    store: &Store,
    at_ms: i64,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO admin_audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at_ms)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The newest entries first, those with an id below `before` (0: from the
/// newest).
pub async fn audit_page(
    store: &Store,
    before: i64,
    limit: u32,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, target, detail FROM admin_audit \
         WHERE ($1 = 0 OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                id: row.try_get("id")?,
                at: crate::timestamp(row.try_get("at")?),
                actor: row.try_get("actor")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                detail: row.try_get("detail")?,
            })
        })
        .collect()
}
