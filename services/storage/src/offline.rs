//! Offline messages (XEP-0160) and last activity (XEP-0012).

use sqlx::Row;

use crate::calls::SqlOperation;
use crate::{Store, StoreError, decode_error};

/// A stanza kept for an account while it had no available resource.
#[derive(Clone, Debug)]
pub struct OfflineMessage {
    /// The stanza as received, serialised; the caller adds the XEP-0203 delay from
    /// `stored_at_ms`.
    pub stanza: Vec<u8>,
    pub stored_at_ms: i64,
}

/// When the account's last resource went unavailable, and its status text then.
#[derive(Clone, Debug)]
pub struct LastActivity {
    pub at_ms: i64,
    pub status: String,
}

impl Store {
    /// Queues a stanza for `jid`; false (nothing stored) when `max_per_account` messages are
    /// already queued.
    pub async fn store_offline(
        &self,
        jid: &str,
        stanza: &[u8],
        stored_at_ms: i64,
        max_per_account: u32,
    ) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::StoreOffline, async {
                // Check and insert in one statement. Two concurrent calls for one account could still
                // both pass the check on Postgres; the router's one-owner-per-account rule prevents that.
                let inserted = sqlx::query(
                    "INSERT INTO offline_messages (jid, stanza, stored_at) SELECT $1, $2, $3 \
                     WHERE (SELECT COUNT(*) FROM offline_messages WHERE jid = $1) < $4",
                )
                .bind(jid)
                .bind(stanza)
                .bind(stored_at_ms)
                .bind(i64::from(max_per_account))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(inserted > 0)
            })
            .await
    }

    /// Removes and returns the queued stanzas, oldest first.
    pub async fn take_offline(&self, jid: &str) -> Result<Vec<OfflineMessage>, StoreError> {
        self.calls
            .call(SqlOperation::TakeOffline, async {
                // One statement is atomic on both backends; RETURNING has no defined order, so sort.
                let rows = sqlx::query(
                    "DELETE FROM offline_messages WHERE jid = $1 RETURNING id, stanza, stored_at",
                )
                .bind(jid)
                .fetch_all(&self.pool)
                .await?;
                let mut messages = rows
                    .iter()
                    .map(|row| {
                        let id: i64 = row.try_get("id")?;
                        let message = OfflineMessage {
                            stanza: row.try_get("stanza")?,
                            stored_at_ms: row.try_get("stored_at")?,
                        };
                        Ok((id, message))
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                messages.sort_unstable_by_key(|(id, _)| *id);
                Ok(messages.into_iter().map(|(_, message)| message).collect())
            })
            .await
    }

    pub async fn count_offline(&self, jid: &str) -> Result<u64, StoreError> {
        self.calls
            .call(SqlOperation::CountOffline, async {
                let count: i64 =
                    sqlx::query("SELECT COUNT(*) AS n FROM offline_messages WHERE jid = $1")
                        .bind(jid)
                        .fetch_one(&self.pool)
                        .await?
                        .try_get("n")?;
                Ok(u64::try_from(count).map_err(decode_error)?)
            })
            .await
    }

    /// Records the moment the last resource went unavailable, replacing the previous one.
    pub async fn set_last_activity(
        &self,
        jid: &str,
        at_ms: i64,
        status: &str,
    ) -> Result<(), StoreError> {
        self.calls
            .call(SqlOperation::SetLastActivity, async {
                sqlx::query(
                    "INSERT INTO last_activity (jid, at_ms, status) VALUES ($1, $2, $3) \
                     ON CONFLICT (jid) DO UPDATE SET at_ms = excluded.at_ms, status = excluded.status",
                )
                .bind(jid)
                .bind(at_ms)
                .bind(status)
                .execute(&self.pool)
                .await?;
                Ok(())
            })
            .await
    }

    pub async fn last_activity(&self, jid: &str) -> Result<Option<LastActivity>, StoreError> {
        self.calls
            .call(SqlOperation::LastActivity, async {
                let row = sqlx::query("SELECT at_ms, status FROM last_activity WHERE jid = $1")
                    .bind(jid)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(LastActivity {
                    at_ms: row.try_get("at_ms")?,
                    status: row.try_get("status")?,
                }))
            })
            .await
    }
}
