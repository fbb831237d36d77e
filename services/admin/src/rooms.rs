//! `/rooms`: the group chat rooms (XEP-0045) of every chat service, and
//! their destruction.
//!
//! A room lives in the store, not in a process (`docs/muc.md`): its
//! configuration, affiliations and occupants are rows that the replica
//! owning the room writes before its output leaves. The listing and a
//! room's details read them from there, a page at a time. A destruction
//! goes through the room's replica like an owner's `<destroy/>`, so that
//! it is serialised with the room's other stanzas and every occupant, on
//! whichever connection-manager, gets the destroy presence.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use xmppd_protocol::jid::Jid;
use xmppd_session::muc::room::{Room, RoomConfig};
use xmppd_session::muc::{self, store};
use xmppd_session::outbox::Outbox;
use xmppd_session::service::Core;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::sessions::no_router;
use crate::{AdminApi, AfterQuery, Page, Params};

/// The longest reason a destruction may give, in bytes: it goes into the
/// presence every occupant gets.
pub const MAX_REASON_BYTES: usize = 1024;

/// How long a destruction waits for the room's replica to remove the room.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it looks meanwhile.
const DESTROY_POLL: Duration = Duration::from_millis(20);

/// The settings of a room an administrator sees in lists and details.
#[derive(Debug, Serialize)]
pub struct RoomSettings {
    pub name: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    pub password_protected: bool,
    pub moderated: bool,
}

impl From<&RoomConfig> for RoomSettings {
    fn from(config: &RoomConfig) -> Self {
        RoomSettings {
            name: config.name.clone(),
            persistent: config.persistent,
            public: config.public,
            members_only: config.members_only,
            password_protected: !config.password.is_empty(),
            moderated: config.moderated,
        }
    }
}

/// A room in the list.
#[derive(Debug, Serialize)]
pub struct RoomInfo {
    pub jid: String,
    #[serde(flatten)]
    pub settings: RoomSettings,
    /// How many are in it.
    pub occupants: i64,
}

impl From<store::RoomSummary> for RoomInfo {
    fn from(room: store::RoomSummary) -> Self {
        RoomInfo {
            settings: RoomSettings::from(&room.config),
            jid: room.jid,
            occupants: room.occupants,
        }
    }
}

/// A room with its subject and occupants.
#[derive(Debug, Serialize)]
pub struct RoomDetail {
    pub jid: String,
    #[serde(flatten)]
    pub settings: RoomSettings,
    pub subject: String,
    pub occupants: Vec<OccupantInfo>,
}

#[derive(Debug, Serialize)]
pub struct OccupantInfo {
    pub nick: String,
    /// The occupant's real full JID.
    pub jid: String,
    pub role: &'static str,
    pub affiliation: &'static str,
}

impl From<&Room> for RoomDetail {
    fn from(room: &Room) -> Self {
        let occupants = room.occupants.iter().map(|occupant| OccupantInfo {
            nick: occupant.nick.clone(),
            jid: occupant.jid.clone(),
            role: occupant.role.name(),
            affiliation: room.affiliation(occupant.bare()).name(),
        });
        RoomDetail {
            jid: room.jid.clone(),
            settings: RoomSettings::from(&room.config),
            subject: room.subject.clone(),
            occupants: occupants.collect(),
        }
    }
}

/// `GET /rooms`: the rooms of every chat service, by JID.
pub async fn list(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<AfterQuery>,
) -> Result<Json<Page<RoomInfo>>, ApiError> {
    let limit = query.limit.get()?;
    let rows = store::rooms_page(&api.core().store, &query.after, limit + 1).await?;
    let items = rows.into_iter().map(RoomInfo::from).collect();
    Ok(Json(Page::from_rows(items, limit, |room: &RoomInfo| {
        room.jid.clone()
    })))
}

/// `GET /rooms/{jid}`: a room, its subject and its occupants.
pub async fn show(
    State(api): State<AdminApi>,
    _caller: Caller,
    Path(jid): Path<String>,
) -> Result<Json<RoomDetail>, ApiError> {
    let jid = room_jid(api.core(), &jid)?;
    match store::load(&api.core().store, jid.as_str()).await? {
        Some(room) => Ok(Json(RoomDetail::from(&room))),
        None => Err(unknown_room(jid.as_str())),
    }
}

/// What occupants of a destroyed room are told (XEP-0045 §10.9).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destruction {
    #[serde(default)]
    reason: String,
    /// A room to go to instead.
    alternate: Option<String>,
}

/// `DELETE /rooms/{jid}`: destroys a room. Answers once the room's replica
/// has told its occupants and removed it.
pub async fn destroy(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(jid): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let core = api.core();
    let jid = room_jid(core, &jid)?;
    let destruction = destruction(&body)?;
    if destruction.reason.len() > MAX_REASON_BYTES {
        return Err(ApiError::bad_request(
            "too_long",
            format!("the reason exceeds {MAX_REASON_BYTES} bytes"),
        ));
    }
    let alternate = match &destruction.alternate {
        Some(alternate) => Some(Jid::parse(alternate).map_err(|error| {
            ApiError::bad_request("malformed_jid", format!("{alternate:?}: {error}"))
        })?),
        None => None,
    };
    let Some(created_at) = store::created_at(&core.store, jid.as_str()).await? else {
        return Err(unknown_room(jid.as_str()));
    };
    let mut out = Outbox::default();
    muc::destroy_request(
        core,
        jid.as_str(),
        &destruction.reason,
        alternate.as_ref().map(Jid::as_str),
        &mut out,
    );
    if !core.send_to_any_router(out.frames).await {
        return Err(no_router());
    }
    wait_until_destroyed(core, jid.as_str(), created_at).await?;
    let detail = json!({
        "reason": destruction.reason,
        "alternate": alternate.as_ref().map(Jid::as_str),
    });
    api.audit(&caller.jid, "room.destroy", jid.as_str(), detail)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The optional body of a destruction: none, or a JSON object.
fn destruction(body: &[u8]) -> Result<Destruction, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Destruction::default());
    }
    serde_json::from_slice(body).map_err(|error| {
        // As the other routes answer: unknown or mistyped fields are 422.
        let status = if error.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, "bad_request", error.to_string())
    })
}

/// Waits until the room created at `created_at` is gone from the store.
/// The replica answers the destroy request to the server's domain, where
/// nothing waits for it, so the store, from which it removes the room
/// before its output leaves, is where to look. A room created again under
/// the same JID meanwhile is another room.
async fn wait_until_destroyed(core: &Core, room: &str, created_at: i64) -> Result<(), ApiError> {
    let deadline = tokio::time::Instant::now() + DESTROY_TIMEOUT;
    while store::created_at(&core.store, room).await? == Some(created_at) {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::unavailable(format!(
                "{room} was not destroyed within {DESTROY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(DESTROY_POLL).await;
    }
    Ok(())
}

/// The bare JID of a room on one of this server's chat services, or why
/// `jid` is not one.
fn room_jid(core: &Core, jid: &str) -> Result<Jid, ApiError> {
    let jid = Jid::parse(jid)
        .map_err(|error| ApiError::bad_request("malformed_jid", format!("{jid:?}: {error}")))?;
    if jid.node().is_none() || jid.resource().is_some() {
        return Err(ApiError::bad_request(
            "malformed_jid",
            format!("{jid} is not a room's bare JID (room@service)"),
        ));
    }
    if !core.settings().muc.serves(jid.domain()) {
        return Err(ApiError::bad_request(
            "not_local",
            format!("{jid} is not on a chat service of this server"),
        ));
    }
    Ok(jid)
}

fn unknown_room(jid: &str) -> ApiError {
    ApiError::not_found("unknown_room", format!("no room {jid}"))
}
