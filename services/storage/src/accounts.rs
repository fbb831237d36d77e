//! Accounts and their SCRAM credentials.

use sqlx::Row;
use sqlx::any::AnyRow;
use xmppd_protocol::JidRef;

use crate::calls::SqlOperation;
use crate::store::now_ms;
use crate::{Store, StoreError, decode_error};

/// What SCRAM needs to authenticate one mechanism (RFC 5802 §3); the password itself is never
/// stored. One type from the edge that derives the keys, through the login calls, to the
/// store: the cluster's wire type (`cluster.proto`), so that no layer converts field by field.
pub use xmppd_grpc::Credential;

fn credential_from_row(row: &AnyRow) -> Result<Credential, sqlx::Error> {
    let iterations: i64 = row.try_get("iterations")?;
    Ok(Credential {
        mechanism: row.try_get("mechanism")?,
        salt: row.try_get("salt")?,
        iterations: u32::try_from(iterations).map_err(decode_error)?,
        stored_key: row.try_get("stored_key")?,
        server_key: row.try_get("server_key")?,
    })
}

/// Account methods. `jid` is always a normalised bare JID, `user@domain`.
impl Store {
    /// Fails with [`StoreError::AlreadyExists`] if the JID is taken.
    pub async fn create_account(
        &self,
        jid: &str,
        credentials: &[Credential],
    ) -> Result<(), StoreError> {
        self.calls
            .call(SqlOperation::CreateAccount, async {
                let domain = JidRef::new(jid).domain();
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO accounts (jid, domain, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (jid) DO NOTHING",
                )
                .bind(jid)
                .bind(domain)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                insert_credentials(&mut tx, jid, credentials).await?;
                tx.commit().await?;
                Ok(())
            })
            .await
    }

    pub async fn account_exists(&self, jid: &str) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::AccountExists, async {
                let row = sqlx::query("SELECT 1 FROM accounts WHERE jid = $1")
                    .bind(jid)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            })
            .await
    }

    /// Empty if there is no such account.
    pub async fn credentials(&self, jid: &str) -> Result<Vec<Credential>, StoreError> {
        let Some(cache) = &self.credential_cache else {
            return self.read_credentials(jid).await;
        };
        let ticket = match cache.cache().get(jid) {
            Ok(credentials) => return Ok(credentials),
            Err(ticket) => ticket,
        };
        let credentials = self.read_credentials(jid).await?;
        if !credentials.is_empty() {
            cache.cache().store(jid, ticket, credentials.clone());
        }
        Ok(credentials)
    }

    async fn read_credentials(&self, jid: &str) -> Result<Vec<Credential>, StoreError> {
        self.calls
            .call(SqlOperation::Credentials, async {
                let rows = sqlx::query(
                    "SELECT mechanism, salt, iterations, stored_key, server_key \
                     FROM credentials WHERE jid = $1 ORDER BY mechanism",
                )
                .bind(jid)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(credential_from_row)
                    .collect::<Result<_, _>>()?)
            })
            .await
    }

    /// Replaces all credentials (a password change, or stronger keys for the same password);
    /// [`StoreError::NotFound`] if there is no such account or, with `replaces`, the account
    /// no longer has a credential with that stored key: the keys a login checked were changed
    /// meanwhile, and the newer ones stay.
    pub async fn set_credentials(
        &self,
        jid: &str,
        credentials: &[Credential],
        replaces: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.calls
            .call(SqlOperation::SetCredentials, async {
                let mut tx = self.pool.begin().await?;
                // The replaced key goes first, in a statement of its own: it waits for a
                // concurrent change of the same rows and then finds nothing to delete.
                if let Some(stored_key) = replaces {
                    let deleted =
                        sqlx::query("DELETE FROM credentials WHERE jid = $1 AND stored_key = $2")
                            .bind(jid)
                            .bind(stored_key)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                    if deleted == 0 {
                        return Err(StoreError::NotFound);
                    }
                }
                sqlx::query("DELETE FROM credentials WHERE jid = $1")
                    .bind(jid)
                    .execute(&mut *tx)
                    .await?;
                let exists = sqlx::query("SELECT 1 FROM accounts WHERE jid = $1")
                    .bind(jid)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound);
                }
                insert_credentials(&mut tx, jid, credentials).await?;
                tx.commit().await?;
                self.forget_credentials(jid);
                Ok(())
            })
            .await
    }

    /// Removes the account and everything it owns (credentials, roster, group memberships,
    /// offline messages, last activity) at once. False if there was no such account.
    pub async fn delete_account(&self, jid: &str) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::DeleteAccount, async {
                let mut tx = self.pool.begin().await?;
                // The rosters of its group-mates lose it: before its memberships go.
                sqlx::query(crate::groups::BUMP_GROUP_MATES)
                    .bind(jid)
                    .execute(&mut *tx)
                    .await?;
                // Credentials and group memberships go by ON DELETE CASCADE, roster groups
                // with their items.
                let deleted = sqlx::query("DELETE FROM accounts WHERE jid = $1")
                    .bind(jid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                // Run even when the account is gone, to sweep rows written without one.
                for sql in [
                    "DELETE FROM roster_items WHERE jid = $1",
                    "DELETE FROM roster_versions WHERE jid = $1",
                    "DELETE FROM offline_messages WHERE jid = $1",
                    "DELETE FROM last_activity WHERE jid = $1",
                ] {
                    sqlx::query(sql).bind(jid).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                self.forget_credentials(jid);
                Ok(deleted > 0)
            })
            .await
    }

    /// Drops the cached credentials of an account this store just changed, at once rather
    /// than when its own notification comes back: a client that changed its password and
    /// logs in again on this replica must not meet the old keys.
    fn forget_credentials(&self, jid: &str) {
        if let Some(cache) = &self.credential_cache {
            cache.cache().invalidate([jid]);
        }
    }

    /// One page of accounts in JID order: at most `limit` after `after`
    /// (empty: from the first), on `domain` if given, whose JID contains
    /// `search` if it is not empty. A page is one indexed range read, so
    /// listing never holds the whole table.
    pub async fn accounts_page(
        &self,
        domain: Option<&str>,
        search: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<AccountEntry>, StoreError> {
        self.calls
            .call(SqlOperation::AccountsPage, async {
                let rows = sqlx::query(
                    "SELECT jid, created_at FROM accounts \
                     WHERE jid > $1 AND ($2 = '' OR domain = $2) \
                     AND ($3 = '' OR jid LIKE $3 ESCAPE '\\') \
                     ORDER BY jid LIMIT $4",
                )
                .bind(after)
                .bind(domain.unwrap_or_default())
                .bind(like_pattern(search))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        Ok(AccountEntry {
                            jid: row.try_get("jid")?,
                            created_at_ms: row.try_get("created_at")?,
                        })
                    })
                    .collect::<Result<_, sqlx::Error>>()?)
            })
            .await
    }
}

/// An account as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEntry {
    pub jid: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

/// A `LIKE` pattern matching JIDs that contain `search` literally; empty
/// for an empty search.
fn like_pattern(search: &str) -> String {
    if search.is_empty() {
        return String::new();
    }
    let mut pattern = String::with_capacity(search.len() + 2);
    pattern.push('%');
    for c in search.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

async fn insert_credentials(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    jid: &str,
    credentials: &[Credential],
) -> Result<(), sqlx::Error> {
    for credential in credentials {
        sqlx::query(
            "INSERT INTO credentials (jid, mechanism, salt, iterations, stored_key, server_key) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(jid)
        .bind(&credential.mechanism)
        .bind(&credential.salt)
        .bind(i64::from(credential.iterations))
        .bind(&credential.stored_key)
        .bind(&credential.server_key)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
