//! `/groups`: shared roster groups (Openfire's groups), whose members see
//! each other in their rosters and get each other's presence without
//! subscribing (`xmppd_session::shared_groups`).
//!
//! A change is made in the store first; then the roster pushes and presence
//! it calls for leave this replica through a router, as announcements do,
//! and reach each member's streams on whichever connection-manager holds
//! them, whichever replica owns the member.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use xmppd_session::outbox::Outbox;
use xmppd_session::service::Core;
use xmppd_session::shared_groups::{self, Change};
use xmppd_storage::{SharedGroup, StoreError};

use crate::accounts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sessions::no_router;
use crate::{AdminApi, AfterQuery, Body, Page, Params};

/// The longest group name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// A group as administrators see it.
#[derive(Debug, Serialize)]
pub struct GroupInfo {
    pub name: String,
    pub description: String,
    /// How many accounts are members.
    pub members: u64,
}

impl From<SharedGroup> for GroupInfo {
    fn from(group: SharedGroup) -> Self {
        GroupInfo {
            name: group.name,
            description: group.description,
            members: group.members,
        }
    }
}

/// `GET /groups`: the groups by name.
pub async fn list(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<AfterQuery>,
) -> Result<Json<Page<GroupInfo>>, ApiError> {
    let limit = query.limit.get()?;
    let rows = api
        .core()
        .store
        .groups_page(&query.after, limit + 1)
        .await?;
    let items = rows.into_iter().map(GroupInfo::from).collect();
    Ok(Json(Page::from_rows(items, limit, |group: &GroupInfo| {
        group.name.clone()
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
    #[serde(default)]
    description: String,
}

/// `POST /groups`: creates a group, with no members.
pub async fn create(
    State(api): State<AdminApi>,
    caller: Caller,
    Body(request): Body<NewGroup>,
) -> Result<(StatusCode, Json<GroupInfo>), ApiError> {
    check_name(&request.name)?;
    match api
        .core()
        .store
        .create_group(&request.name, &request.description)
        .await
    {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "group_exists",
                format!("group {:?} exists already", request.name),
            ));
        }
        Err(error) => return Err(error.into()),
    }
    let detail = json!({"description": request.description});
    api.audit(&caller.jid, "group.create", &request.name, detail)
        .await?;
    let group = GroupInfo {
        name: request.name,
        description: request.description,
        members: 0,
    };
    Ok((StatusCode::CREATED, Json(group)))
}

/// `GET /groups/{name}`.
pub async fn show(
    State(api): State<AdminApi>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<GroupInfo>, ApiError> {
    Ok(Json(existing(api.core(), &name).await?.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Description {
    description: String,
}

/// `PUT /groups/{name}`: a new description. Members never see it, so
/// nothing is pushed to them.
pub async fn describe(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(name): Path<String>,
    Body(request): Body<Description>,
) -> Result<Json<GroupInfo>, ApiError> {
    let store = &api.core().store;
    if !store
        .set_group_description(&name, &request.description)
        .await?
    {
        return Err(unknown_group(&name));
    }
    let detail = json!({"description": request.description});
    api.audit(&caller.jid, "group.update", &name, detail)
        .await?;
    Ok(Json(existing(api.core(), &name).await?.into()))
}

/// `DELETE /groups/{name}`: its members stop seeing each other through it.
pub async fn delete(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let Some(members) = api.core().store.delete_group(&name).await? else {
        return Err(unknown_group(&name));
    };
    let detail = json!({"members": members.len()});
    api.audit(&caller.jid, "group.delete", &name, detail)
        .await?;
    let change = Change {
        subjects: &members,
        others: &[],
        joined: false,
    };
    tell_members(api.core(), &change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A member as listed.
#[derive(Debug, Serialize)]
pub struct MemberInfo {
    pub jid: String,
}

/// `GET /groups/{name}/members`: the members by JID.
pub async fn members(
    State(api): State<AdminApi>,
    _caller: Caller,
    Path(name): Path<String>,
    Params(query): Params<AfterQuery>,
) -> Result<Json<Page<MemberInfo>>, ApiError> {
    let limit = query.limit.get()?;
    existing(api.core(), &name).await?;
    let rows = api
        .core()
        .store
        .group_members_page(&name, &query.after, limit + 1)
        .await?;
    let items = rows.into_iter().map(|jid| MemberInfo { jid }).collect();
    Ok(Json(Page::from_rows(
        items,
        limit,
        |member: &MemberInfo| member.jid.clone(),
    )))
}

/// `PUT /groups/{name}/members/{jid}`: makes an account a member (again:
/// nothing changes).
pub async fn add_member(
    State(api): State<AdminApi>,
    caller: Caller,
    Path((name, jid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let core = api.core();
    existing(core, &name).await?;
    let jid = accounts::existing(core, &jid).await?.to_string();
    let added = match core.store.add_group_member(&name, &jid).await {
        Ok(added) => added,
        // The group or the account went meanwhile.
        Err(StoreError::NotFound) => return Err(unknown_group(&name)),
        Err(error) => return Err(error.into()),
    };
    if !added {
        return Ok(StatusCode::NO_CONTENT);
    }
    api.audit(&caller.jid, "group.add_member", &name, json!({"jid": jid}))
        .await?;
    member_changed(core, &name, jid, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /groups/{name}/members/{jid}`.
pub async fn remove_member(
    State(api): State<AdminApi>,
    caller: Caller,
    Path((name, jid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let core = api.core();
    existing(core, &name).await?;
    let jid = api.local_account(&jid)?.to_string();
    if !core.store.remove_group_member(&name, &jid).await? {
        return Err(ApiError::not_found(
            "unknown_member",
            format!("{jid} is not a member of group {name:?}"),
        ));
    }
    api.audit(
        &caller.jid,
        "group.remove_member",
        &name,
        json!({"jid": jid}),
    )
    .await?;
    member_changed(core, &name, jid, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tells the members of `group` and `member` that it joined or left.
async fn member_changed(
    core: &Core,
    group: &str,
    member: String,
    joined: bool,
) -> Result<(), ApiError> {
    let mut others = shared_groups::members(core, group)
        .await
        .map_err(ApiError::unavailable)?;
    others.retain(|other| *other != member);
    let change = Change {
        subjects: &[member],
        others: &others,
        joined,
    };
    tell_members(core, &change).await
}

/// Sends the roster pushes and presence `change` calls for through a router.
pub async fn tell_members(core: &Core, change: &Change<'_>) -> Result<(), ApiError> {
    let mut out = Outbox::default();
    shared_groups::changed(core, change, &mut out)
        .await
        .map_err(ApiError::unavailable)?;
    if !core.send_to_any_router(out.frames).await {
        return Err(no_router());
    }
    Ok(())
}

/// The group named `name`, or `unknown_group`.
async fn existing(core: &Core, name: &str) -> Result<SharedGroup, ApiError> {
    core.store
        .group(name)
        .await?
        .ok_or_else(|| unknown_group(name))
}

fn unknown_group(name: &str) -> ApiError {
    ApiError::not_found("unknown_group", format!("no group {name:?}"))
}

/// A name is 1 to [`MAX_NAME_BYTES`] bytes without control characters: it
/// is shown in rosters as a roster group.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_name",
            format!("a group's name is 1 to {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_to_two_hundred_bytes_without_control_characters() {
        for good in ["Staff", "Ünïcode ✓", "x".repeat(MAX_NAME_BYTES).as_str()] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "x".repeat(MAX_NAME_BYTES + 1).as_str(),
            "tab\there",
            "new\nline",
            "\u{7f}",
        ] {
            assert_eq!(check_name(bad).unwrap_err().code, "bad_name", "{bad:?}");
        }
    }
}
