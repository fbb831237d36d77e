//! Rosters (RFC 6121 §2) with XEP-0237 versioning: one counter per account, bumped in the
//! same transaction as every change.

use std::fmt;
use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::calls::SqlOperation;
use crate::{Store, StoreError, decode_error};

/// The `subscription` attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

/// A string that is not one of "none", "to", "from", "both".
#[derive(Debug, thiserror::Error)]
#[error("invalid subscription {0:?}")]
pub struct InvalidSubscription(pub String);

impl FromStr for Subscription {
    type Err = InvalidSubscription;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Subscription::None),
            "to" => Ok(Subscription::To),
            "from" => Ok(Subscription::From),
            "both" => Ok(Subscription::Both),
            other => Err(InvalidSubscription(other.to_owned())),
        }
    }
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One contact of a roster, with the subscription state RFC 6121 Appendix A tracks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterItem {
    /// Bare JID of the contact.
    pub contact: String,
    pub name: Option<String>,
    pub subscription: Subscription,
    /// We sent a subscribe the contact has not answered yet (`ask="subscribe"`).
    pub ask_out: bool,
    /// The contact asked to subscribe and the user has not answered yet; such a request
    /// must be redelivered at the user's next login.
    pub pending_in: bool,
    /// Returned in the order stored, a repeated name kept once.
    pub groups: Vec<String>,
}

/// A whole roster and the version it had when read.
#[derive(Clone, Debug)]
pub struct Roster {
    pub version: i64,
    pub items: Vec<RosterItem>,
}

/// Items joined with their groups: one row per group, or one with a NULL group. The caller
/// appends the WHERE tail; rows of one item must come out adjacent, groups in position order.
macro_rules! select_items {
    ($tail:literal) => {
        concat!(
            "SELECT i.contact, i.name, i.subscription, i.ask_out, i.pending_in, g.grp \
             FROM roster_items i \
             LEFT JOIN roster_groups g ON g.jid = i.jid AND g.contact = i.contact \
             WHERE i.jid = $1",
            $tail
        )
    };
}

/// Roster methods. `jid` is the owner's bare JID, `contact` the contact's.
impl Store {
    pub async fn roster(&self, jid: &str) -> Result<Roster, StoreError> {
        self.calls
            .call(SqlOperation::Roster, async {
                // Version first: should a change land between the two reads, the items are newer
                // than the version, which costs the client one redundant push; the other order would
                // let it cache stale items under a newer version.
                let version = self.roster_version(jid).await?;
                let rows = sqlx::query(select_items!(" ORDER BY i.contact, g.position"))
                    .bind(jid)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(Roster {
                    version,
                    items: items_from_rows(&rows)?,
                })
            })
            .await
    }

    /// 0 for an account whose roster never changed.
    pub async fn roster_version(&self, jid: &str) -> Result<i64, StoreError> {
        self.calls
            .call(SqlOperation::RosterVersion, async {
                let row = sqlx::query("SELECT version FROM roster_versions WHERE jid = $1")
                    .bind(jid)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row
                    .map(|row| row.try_get("version"))
                    .transpose()?
                    .unwrap_or(0))
            })
            .await
    }

    pub async fn roster_item(
        &self,
        jid: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StoreError> {
        self.calls
            .call(SqlOperation::RosterItem, async {
                let rows = sqlx::query(select_items!(" AND i.contact = $2 ORDER BY g.position"))
                    .bind(jid)
                    .bind(contact)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(items_from_rows(&rows)?.pop())
            })
            .await
    }

    /// Inserts or replaces the item, groups included; returns the new roster version.
    pub async fn put_roster_item(&self, jid: &str, item: &RosterItem) -> Result<i64, StoreError> {
        self.calls
            .call(SqlOperation::PutRosterItem, async {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO roster_items \
                     (jid, contact, name, subscription, ask_out, pending_in) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (jid, contact) DO UPDATE SET name = excluded.name, \
                     subscription = excluded.subscription, ask_out = excluded.ask_out, \
                     pending_in = excluded.pending_in",
                )
                .bind(jid)
                .bind(&item.contact)
                .bind(item.name.as_deref())
                .bind(item.subscription.as_str())
                .bind(i16::from(item.ask_out))
                .bind(i16::from(item.pending_in))
                .execute(&mut *tx)
                .await?;
                replace_groups(&mut tx, jid, item).await?;
                let version = bump_version(&mut tx, jid).await?;
                tx.commit().await?;
                Ok(version)
            })
            .await
    }

    /// Returns the new roster version, or None (and no bump) if there was no such item.
    pub async fn remove_roster_item(
        &self,
        jid: &str,
        contact: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.calls
            .call(SqlOperation::RemoveRosterItem, async {
                let mut tx = self.pool.begin().await?;
                let deleted =
                    sqlx::query("DELETE FROM roster_items WHERE jid = $1 AND contact = $2")
                        .bind(jid)
                        .bind(contact)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if deleted == 0 {
                    return Ok(None);
                }
                let version = bump_version(&mut tx, jid).await?;
                tx.commit().await?;
                Ok(Some(version))
            })
            .await
    }
}

async fn replace_groups(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    jid: &str,
    item: &RosterItem,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM roster_groups WHERE jid = $1 AND contact = $2")
        .bind(jid)
        .bind(&item.contact)
        .execute(&mut **tx)
        .await?;
    for (position, group) in (0_i64..).zip(&item.groups) {
        sqlx::query(
            "INSERT INTO roster_groups (jid, contact, grp, position) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (jid, contact, grp) DO NOTHING",
        )
        .bind(jid)
        .bind(&item.contact)
        .bind(group)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub(crate) async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    jid: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO roster_versions (jid, version) VALUES ($1, 1) \
         ON CONFLICT (jid) DO UPDATE SET version = roster_versions.version + 1 \
         RETURNING version",
    )
    .bind(jid)
    .fetch_one(&mut **tx)
    .await?
    .try_get("version")
}

/// Folds the rows of `select_items!` into items, appending each row's group to its item.
fn items_from_rows(rows: &[AnyRow]) -> Result<Vec<RosterItem>, sqlx::Error> {
    let mut items: Vec<RosterItem> = Vec::new();
    for row in rows {
        let contact: String = row.try_get("contact")?;
        let group: Option<String> = row.try_get("grp")?;
        match items.last_mut() {
            Some(item) if item.contact == contact => item.groups.extend(group),
            _ => items.push(item_from_row(row, contact, group)?),
        }
    }
    Ok(items)
}

fn item_from_row(
    row: &AnyRow,
    contact: String,
    group: Option<String>,
) -> Result<RosterItem, sqlx::Error> {
    let subscription: String = row.try_get("subscription")?;
    Ok(RosterItem {
        contact,
        name: row.try_get("name")?,
        subscription: subscription.parse().map_err(decode_error)?,
        ask_out: row.try_get::<i16, _>("ask_out")? != 0,
        pending_in: row.try_get::<i16, _>("pending_in")? != 0,
        groups: group.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_round_trips_through_its_string() {
        for sub in [
            Subscription::None,
            Subscription::To,
            Subscription::From,
            Subscription::Both,
        ] {
            assert_eq!(sub.as_str().parse::<Subscription>().unwrap(), sub);
        }
        assert!("Both".parse::<Subscription>().is_err());
    }
}
