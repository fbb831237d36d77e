//! Shared roster groups: named sets of accounts whose members see each other in their
//! rosters without subscribing. Their items are not stored in each member's roster; the
//! session service merges them in. Every change bumps the roster version (`roster.rs`) of
//! each member whose roster it changes, in the same transaction, so that XEP-0237 clients
//! caching a roster see a new version.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::calls::SqlOperation;
use crate::roster::bump_version;
use crate::store::now_ms;
use crate::{Store, StoreError};

/// A group as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedGroup {
    pub name: String,
    /// For administrators; members never see it.
    pub description: String,
    /// How many accounts are members.
    pub members: u64,
}

/// Another member of some of an account's groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedContact {
    /// Bare JID.
    pub contact: String,
    /// The groups both are members of, by name.
    pub groups: Vec<String>,
}

/// Bumps the roster version of every member of group `$1`.
const BUMP_MEMBERS: &str = "INSERT INTO roster_versions (jid, version) \
     SELECT jid, 1 FROM shared_group_members WHERE grp = $1 \
     ON CONFLICT (jid) DO UPDATE SET version = roster_versions.version + 1";

/// Bumps the roster version of every account that shares a group with `$1`.
pub(crate) const BUMP_GROUP_MATES: &str = "INSERT INTO roster_versions (jid, version) \
     SELECT DISTINCT other.jid, 1 FROM shared_group_members mine \
     JOIN shared_group_members other ON other.grp = mine.grp \
     WHERE mine.jid = $1 AND other.jid <> $1 \
     ON CONFLICT (jid) DO UPDATE SET version = roster_versions.version + 1";

const GROUP_COLUMNS: &str = "g.name, g.description, \
     (SELECT COUNT(*) FROM shared_group_members m WHERE m.grp = g.name) AS members";

fn group_from_row(row: &AnyRow) -> Result<SharedGroup, sqlx::Error> {
    let members: i64 = row.try_get("members")?;
    Ok(SharedGroup {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        members: u64::try_from(members).unwrap_or_default(),
    })
}

/// Group methods. `name` is a group's name, `jid` an account's bare JID.
impl Store {
    /// Fails with [`StoreError::AlreadyExists`] if the name is taken.
    pub async fn create_group(&self, name: &str, description: &str) -> Result<(), StoreError> {
        self.calls
            .call(SqlOperation::CreateGroup, async {
                let inserted = sqlx::query(
                    "INSERT INTO shared_groups (name, description, created_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(name)
                .bind(description)
                .bind(now_ms())
                .execute(&self.pool)
                .await?
                .rows_affected();
                if inserted == 0 {
                    return Err(StoreError::AlreadyExists);
                }
                Ok(())
            })
            .await
    }

    pub async fn group(&self, name: &str) -> Result<Option<SharedGroup>, StoreError> {
        self.calls
            .call(SqlOperation::Group, async {
                let row = sqlx::query(&format!(
                    "SELECT {GROUP_COLUMNS} FROM shared_groups g WHERE g.name = $1"
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(group_from_row).transpose()?)
            })
            .await
    }

    /// One page of groups in name order: at most `limit` after `after` (empty: from the
    /// first).
    pub async fn groups_page(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<SharedGroup>, StoreError> {
        self.calls
            .call(SqlOperation::GroupsPage, async {
                let rows = sqlx::query(&format!(
                    "SELECT {GROUP_COLUMNS} FROM shared_groups g WHERE g.name > $1 \
                     ORDER BY g.name LIMIT $2"
                ))
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(group_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    /// False if there is no such group. Members do not see the description, so their
    /// rosters keep their versions.
    pub async fn set_group_description(
        &self,
        name: &str,
        description: &str,
    ) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::SetGroupDescription, async {
                let updated =
                    sqlx::query("UPDATE shared_groups SET description = $2 WHERE name = $1")
                        .bind(name)
                        .bind(description)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                Ok(updated > 0)
            })
            .await
    }

    /// Deletes the group; returns the members it had, whose roster versions are bumped, or
    /// `None` if there was no such group.
    pub async fn delete_group(&self, name: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.calls
            .call(SqlOperation::DeleteGroup, async {
                let mut tx = self.pool.begin().await?;
                sqlx::query(BUMP_MEMBERS)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                let members =
                    sqlx::query("SELECT jid FROM shared_group_members WHERE grp = $1 ORDER BY jid")
                        .bind(name)
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|row| row.try_get("jid"))
                        .collect::<Result<Vec<String>, _>>()?;
                // Members go by ON DELETE CASCADE.
                let deleted = sqlx::query("DELETE FROM shared_groups WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if deleted == 0 {
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(members))
            })
            .await
    }

    /// One page of a group's members in JID order: at most `limit` after `after` (empty:
    /// from the first). Empty for a group that does not exist.
    pub async fn group_members_page(
        &self,
        name: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        self.calls
            .call(SqlOperation::GroupMembersPage, async {
                let rows = sqlx::query(
                    "SELECT jid FROM shared_group_members WHERE grp = $1 AND jid > $2 \
                     ORDER BY jid LIMIT $3",
                )
                .bind(name)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| row.try_get("jid"))
                    .collect::<Result<_, _>>()?)
            })
            .await
    }

    /// Makes `jid` a member; false if it was one already (and nothing changes).
    /// [`StoreError::NotFound`] if the group or the account does not exist.
    pub async fn add_group_member(&self, name: &str, jid: &str) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::AddGroupMember, async {
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(
                    "INSERT INTO shared_group_members (grp, jid) \
                     SELECT g.name, a.jid FROM shared_groups g, accounts a \
                     WHERE g.name = $1 AND a.jid = $2 \
                     ON CONFLICT (grp, jid) DO NOTHING",
                )
                .bind(name)
                .bind(jid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    let member = sqlx::query(
                        "SELECT 1 FROM shared_group_members WHERE grp = $1 AND jid = $2",
                    )
                    .bind(name)
                    .bind(jid)
                    .fetch_optional(&mut *tx)
                    .await?;
                    return match member {
                        Some(_) => Ok(false),
                        None => Err(StoreError::NotFound),
                    };
                }
                sqlx::query(BUMP_MEMBERS)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            })
            .await
    }

    /// Takes `jid` out of the group; false if it was not a member.
    pub async fn remove_group_member(&self, name: &str, jid: &str) -> Result<bool, StoreError> {
        self.calls
            .call(SqlOperation::RemoveGroupMember, async {
                let mut tx = self.pool.begin().await?;
                let deleted =
                    sqlx::query("DELETE FROM shared_group_members WHERE grp = $1 AND jid = $2")
                        .bind(name)
                        .bind(jid)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if deleted == 0 {
                    return Ok(false);
                }
                sqlx::query(BUMP_MEMBERS)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                bump_version(&mut tx, jid).await?;
                tx.commit().await?;
                Ok(true)
            })
            .await
    }

    /// Every account that shares a group with `jid`, in JID order, with the groups they
    /// share in name order.
    pub async fn shared_contacts(&self, jid: &str) -> Result<Vec<SharedContact>, StoreError> {
        self.calls
            .call(SqlOperation::SharedContacts, async {
                let rows = sqlx::query(
                    "SELECT other.jid, other.grp FROM shared_group_members mine \
                     JOIN shared_group_members other ON other.grp = mine.grp \
                     WHERE mine.jid = $1 AND other.jid <> $1 \
                     ORDER BY other.jid, other.grp",
                )
                .bind(jid)
                .fetch_all(&self.pool)
                .await?;
                let mut contacts: Vec<SharedContact> = Vec::new();
                for row in &rows {
                    let contact: String = row.try_get("jid")?;
                    let group: String = row.try_get("grp")?;
                    match contacts.last_mut() {
                        Some(last) if last.contact == contact => last.groups.push(group),
                        _ => contacts.push(SharedContact {
                            contact,
                            groups: vec![group],
                        }),
                    }
                }
                Ok(contacts)
            })
            .await
    }

    /// The groups both `jid` and `contact` are members of, in name order.
    pub async fn shared_groups_between(
        &self,
        jid: &str,
        contact: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.calls
            .call(SqlOperation::SharedGroupsBetween, async {
                let rows = sqlx::query(
                    "SELECT mine.grp FROM shared_group_members mine \
                     JOIN shared_group_members other ON other.grp = mine.grp \
                     WHERE mine.jid = $1 AND other.jid = $2 AND mine.jid <> other.jid \
                     ORDER BY mine.grp",
                )
                .bind(jid)
                .bind(contact)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .iter()
                    .map(|row| row.try_get("grp"))
                    .collect::<Result<_, _>>()?)
            })
            .await
    }
}
