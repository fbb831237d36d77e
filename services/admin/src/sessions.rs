//! `/sessions`: the bound resources of the whole cluster (the registry's),
//! and ending them. An ended session is kicked through a router to the
//! connection-manager holding its stream, which closes it with a stream
//! error; the stream's end then tells its contacts, as any end does.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use xmppd_grpc::{BoundResource, Kick, session_down};
use xmppd_protocol::JidRef;
use xmppd_protocol::jid::Jid;
use xmppd_session::service::Core;

use crate::accounts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::{AdminApi, Limit, Page, Params, timestamp};

/// A bound resource as administrators see it.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Its full JID.
    pub jid: String,
    pub account: String,
    pub resource: String,
    /// The connection-manager holding its stream.
    pub node: String,
    /// `tcp` or `websocket`.
    pub transport: String,
    /// The client's IP address.
    pub address: String,
    pub login_at: String,
    /// Whether it sent available presence.
    pub available: bool,
    pub priority: i32,
}

impl From<&BoundResource> for SessionInfo {
    fn from(resource: &BoundResource) -> Self {
        let jid = JidRef::new(&resource.full_jid);
        let origin = resource.origin.clone().unwrap_or_default();
        SessionInfo {
            jid: resource.full_jid.clone(),
            account: jid.bare().as_str().to_string(),
            resource: jid.resource().unwrap_or_default().to_string(),
            node: resource.node_id.clone(),
            transport: origin.transport,
            address: origin.address,
            login_at: timestamp(resource.bound_at),
            available: resource.available,
            priority: resource.priority,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this account's sessions (all on one page).
    account: Option<String>,
    /// The `next` of the previous page.
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: Limit,
}

/// `GET /sessions`: every session in the cluster, a page at a time. A page
/// holds the sessions of about `limit` accounts; the order is the
/// registry's (see `Registry::resources_page`).
pub async fn list(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page<SessionInfo>>, ApiError> {
    let limit = query.limit.get()?;
    let registry = &api.core().registry;
    let (resources, next) = match &query.account {
        Some(account) => {
            let account = api.local_account(account)?;
            (registry.resources(account.as_str()).await?, None)
        }
        None => {
            let page = registry
                .resources_page(&query.cursor, limit as usize)
                .await?;
            (page.resources, page.next)
        }
    };
    Ok(Json(Page {
        items: resources.iter().map(SessionInfo::from).collect(),
        next,
    }))
}

/// The full JIDs of the sessions a request ended.
#[derive(Debug, Serialize)]
pub struct Ended {
    pub ended: Vec<String>,
}

/// `DELETE /sessions/{jid}`: ends one session (a full JID).
pub async fn kick(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(jid): Path<String>,
) -> Result<Json<Ended>, ApiError> {
    let full = Jid::parse(&jid)
        .map_err(|error| ApiError::bad_request("malformed_jid", format!("{jid:?}: {error}")))?;
    if full.resource().is_none() {
        return Err(ApiError::bad_request(
            "malformed_jid",
            format!("{full} is not a session's full JID (user@domain/resource)"),
        ));
    }
    let Some(resource) = api.core().registry.session(full.as_str()).await? else {
        return Err(ApiError::not_found(
            "unknown_session",
            format!("{full} is not bound"),
        ));
    };
    let ended = end(api.core(), &[resource], KICK_CONDITION, KICK_TEXT).await?;
    api.audit(&caller.jid, "session.end", full.as_str(), json!({}))
        .await?;
    Ok(Json(ended))
}

/// `DELETE /accounts/{jid}/sessions`: ends every session of an account.
pub async fn kick_account(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(jid): Path<String>,
) -> Result<Json<Ended>, ApiError> {
    let jid = accounts::existing(api.core(), &jid).await?;
    let resources = api.core().registry.resources(jid.as_str()).await?;
    let ended = end(api.core(), &resources, KICK_CONDITION, KICK_TEXT).await?;
    api.audit(
        &caller.jid,
        "account.end_sessions",
        jid.as_str(),
        json!({"ended": ended.ended}),
    )
    .await?;
    Ok(Json(ended))
}

/// The stream error an administrator's kick closes a stream with.
pub const KICK_CONDITION: &str = "policy-violation";
pub const KICK_TEXT: &str = "session ended by an administrator";

/// Kicks `resources` with the stream error `condition`, through a router.
pub async fn end(
    core: &Core,
    resources: &[BoundResource],
    condition: &str,
    text: &str,
) -> Result<Ended, ApiError> {
    let kicks = resources
        .iter()
        .map(|resource| {
            session_down::Frame::Kick(Kick {
                node_id: resource.node_id.clone(),
                full_jid: resource.full_jid.clone(),
                conn_id: resource.conn_id,
                condition: condition.to_string(),
                text: text.to_string(),
            })
        })
        .collect();
    if !core.send_to_any_router(kicks).await {
        return Err(no_router());
    }
    Ok(Ended {
        ended: resources.iter().map(|r| r.full_jid.clone()).collect(),
    })
}

pub fn no_router() -> ApiError {
    ApiError::unavailable("no router is attached to this replica")
}
