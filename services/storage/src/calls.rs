//! The SQL store's calls, timed by operation.

use xmppd_metrics::{CallError, Operation};

use crate::StoreError;

/// The `operation` label of `xmppd_store_call_seconds`: the [`crate::Store`]
/// method, whatever statements it runs. An account module's own queries
/// (through [`crate::Store::pool`]) are not among them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SqlOperation {
    CreateAccount,
    AccountExists,
    Credentials,
    SetCredentials,
    DeleteAccount,
    AccountsPage,
    StoreOffline,
    TakeOffline,
    CountOffline,
    SetLastActivity,
    LastActivity,
    Roster,
    RosterVersion,
    RosterItem,
    PutRosterItem,
    RemoveRosterItem,
    CreateGroup,
    Group,
    GroupsPage,
    SetGroupDescription,
    DeleteGroup,
    GroupMembersPage,
    AddGroupMember,
    RemoveGroupMember,
    SharedContacts,
    SharedGroupsBetween,
}

impl Operation for SqlOperation {
    const ALL: &'static [Self] = &[
        SqlOperation::CreateAccount,
        SqlOperation::AccountExists,
        SqlOperation::Credentials,
        SqlOperation::SetCredentials,
        SqlOperation::DeleteAccount,
        SqlOperation::AccountsPage,
        SqlOperation::StoreOffline,
        SqlOperation::TakeOffline,
        SqlOperation::CountOffline,
        SqlOperation::SetLastActivity,
        SqlOperation::LastActivity,
        SqlOperation::Roster,
        SqlOperation::RosterVersion,
        SqlOperation::RosterItem,
        SqlOperation::PutRosterItem,
        SqlOperation::RemoveRosterItem,
        SqlOperation::CreateGroup,
        SqlOperation::Group,
        SqlOperation::GroupsPage,
        SqlOperation::SetGroupDescription,
        SqlOperation::DeleteGroup,
        SqlOperation::GroupMembersPage,
        SqlOperation::AddGroupMember,
        SqlOperation::RemoveGroupMember,
        SqlOperation::SharedContacts,
        SqlOperation::SharedGroupsBetween,
    ];

    fn name(self) -> &'static str {
        match self {
            SqlOperation::CreateAccount => "create_account",
            SqlOperation::AccountExists => "account_exists",
            SqlOperation::Credentials => "credentials",
            SqlOperation::SetCredentials => "set_credentials",
            SqlOperation::DeleteAccount => "delete_account",
            SqlOperation::AccountsPage => "accounts_page",
            SqlOperation::StoreOffline => "store_offline",
            SqlOperation::TakeOffline => "take_offline",
            SqlOperation::CountOffline => "count_offline",
            SqlOperation::SetLastActivity => "set_last_activity",
            SqlOperation::LastActivity => "last_activity",
            SqlOperation::Roster => "roster",
            SqlOperation::RosterVersion => "roster_version",
            SqlOperation::RosterItem => "roster_item",
            SqlOperation::PutRosterItem => "put_roster_item",
            SqlOperation::RemoveRosterItem => "remove_roster_item",
            SqlOperation::CreateGroup => "create_group",
            SqlOperation::Group => "group",
            SqlOperation::GroupsPage => "groups_page",
            SqlOperation::SetGroupDescription => "set_group_description",
            SqlOperation::DeleteGroup => "delete_group",
            SqlOperation::GroupMembersPage => "group_members_page",
            SqlOperation::AddGroupMember => "add_group_member",
            SqlOperation::RemoveGroupMember => "remove_group_member",
            SqlOperation::SharedContacts => "shared_contacts",
            SqlOperation::SharedGroupsBetween => "shared_groups_between",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An account that exists, or a row that does not, is an answer; only the
/// database failing counts as an error.
impl CallError for StoreError {
    fn is_failure(&self) -> bool {
        !matches!(self, StoreError::AlreadyExists | StoreError::NotFound)
    }
}
