//! `/accounts`: create, list, show, delete, and reset passwords.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use xmppd_storage::{AccountEntry, Credential, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::sessions::{self, SessionInfo};
use xmppd_session::outbox::Outbox;
use xmppd_session::service::Core;
use xmppd_session::shared_groups;

use crate::{AdminApi, Body, Limit, Page, Params, timestamp};

#[derive(Debug, Serialize)]
pub struct AccountInfo {
    pub jid: String,
    pub created_at: String,
}

impl From<AccountEntry> for AccountInfo {
    fn from(entry: AccountEntry) -> Self {
        AccountInfo {
            jid: entry.jid,
            created_at: timestamp(entry.created_at_ms),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only JIDs that contain this (case-insensitively).
    #[serde(default)]
    search: String,
    /// The `next` of the previous page.
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: Limit,
}

/// `GET /accounts`: the accounts of this server's domain, by JID.
pub async fn list(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page<AccountInfo>>, ApiError> {
    let limit = query.limit.get()?;
    // JIDs are stored normalised, with their localpart in lower case.
    let search = query.search.to_lowercase();
    let rows = api
        .core()
        .store
        .accounts_page(Some(&api.core().domain), &search, &query.after, limit + 1)
        .await?;
    let items = rows.into_iter().map(AccountInfo::from).collect();
    Ok(Json(Page::from_rows(
        items,
        limit,
        |account: &AccountInfo| account.jid.clone(),
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    jid: String,
    password: String,
}

/// `POST /accounts`: creates an account.
pub async fn create(
    State(api): State<AdminApi>,
    caller: Caller,
    Body(request): Body<NewAccount>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let jid = api.local_account(&request.jid)?;
    let credentials = credentials(api.core(), request.password).await?;
    match api
        .core()
        .store
        .create_account(jid.as_str(), &credentials)
        .await
    {
        Ok(()) => {}
        Err(StoreError::AlreadyExists) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "account_exists",
                format!("{jid} exists already"),
            ));
        }
        Err(error) => return Err(error.into()),
    }
    api.audit(&caller.jid, "account.create", jid.as_str(), json!({}))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"jid": jid.as_str()}))))
}

#[derive(Debug, Serialize)]
pub struct AccountDetail {
    pub jid: String,
    /// Its bound resources, wherever in the cluster.
    pub sessions: Vec<SessionInfo>,
}

/// `GET /accounts/{jid}`: an account and its sessions.
pub async fn show(
    State(api): State<AdminApi>,
    _caller: Caller,
    Path(jid): Path<String>,
) -> Result<Json<AccountDetail>, ApiError> {
    let jid = existing(api.core(), &jid).await?;
    let resources = api.core().registry.resources(jid.as_str()).await?;
    Ok(Json(AccountDetail {
        jid: jid.to_string(),
        sessions: resources.iter().map(SessionInfo::from).collect(),
    }))
}

/// `DELETE /accounts/{jid}`: deletes an account and everything stored for
/// it (its group memberships too), and ends its sessions.
pub async fn delete(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(jid): Path<String>,
) -> Result<Json<sessions::Ended>, ApiError> {
    let jid = api.local_account(&jid)?;
    let ended = remove(api.core(), jid.as_str()).await?;
    api.audit(
        &caller.jid,
        "account.delete",
        jid.as_str(),
        json!({"ended": ended.ended}),
    )
    .await?;
    Ok(Json(ended))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    password: String,
}

/// `PUT /accounts/{jid}/password`: sets a new password. Sessions already
/// logged in stay.
pub async fn set_password(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(jid): Path<String>,
    Body(request): Body<NewPassword>,
) -> Result<StatusCode, ApiError> {
    let jid = api.local_account(&jid)?;
    let credentials = credentials(api.core(), request.password).await?;
    match api
        .core()
        .store
        .set_credentials(jid.as_str(), &credentials, None)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(unknown_account(jid.as_str())),
        Err(error) => return Err(error.into()),
    }
    api.audit(&caller.jid, "account.password", jid.as_str(), json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes the account `jid` and everything stored for it, tells its
/// group-mates' clients it is gone, and ends its sessions.
pub async fn remove(core: &Core, jid: &str) -> Result<sessions::Ended, ApiError> {
    let mut out = Outbox::default();
    let deleted = shared_groups::delete_account(core, jid, &mut out)
        .await
        .map_err(ApiError::unavailable)?;
    if !deleted {
        return Err(unknown_account(jid));
    }
    if !core.send_to_any_router(out.frames).await {
        return Err(sessions::no_router());
    }
    let resources = core.registry.resources(jid).await?;
    sessions::end(core, &resources, "not-authorized", "account deleted").await
}

/// The bare JID of an account that exists.
pub async fn existing(core: &Core, jid: &str) -> Result<xmppd_protocol::jid::Jid, ApiError> {
    let jid = crate::local_account(core, jid)?;
    if !core.store.account_exists(jid.as_str()).await? {
        return Err(unknown_account(jid.as_str()));
    }
    Ok(jid)
}

pub fn unknown_account(jid: &str) -> ApiError {
    ApiError::not_found("unknown_account", format!("no account {jid}"))
}

/// SCRAM keys for `password` (PBKDF2, off the async threads).
pub async fn credentials(core: &Core, password: String) -> Result<Vec<Credential>, ApiError> {
    let iterations = core.settings().scram_iterations;
    let keys =
        tokio::task::spawn_blocking(move || xmppd_sasl::new_credentials(&password, iterations))
            .await
            .map_err(ApiError::unavailable)?
            .map_err(|_| {
                ApiError::bad_request(
                    "bad_password",
                    "a password must be a non-empty RFC 8265 OpaqueString",
                )
            })?;
    Ok(keys.into_iter().map(Credential::from).collect())
}
