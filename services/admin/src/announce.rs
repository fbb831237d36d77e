//! `/announcements`: a message from the server to every online user, to
//! every user (stored offline for those not online), or to one user.

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use xmppd_grpc::Kind;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_session::outbox::Outbox;
use xmppd_session::service::Core;

use crate::accounts;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sessions::no_router;
use crate::{AdminApi, Body, MAX_LIMIT};

/// The longest subject plus body, in bytes: well inside the smallest
/// stanza limit a client is likely to have.
pub const MAX_ANNOUNCEMENT_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announcement {
    /// `online`, `all`, or an account's bare JID.
    to: String,
    #[serde(default)]
    subject: String,
    body: String,
}

#[derive(Debug, Serialize)]
pub struct Sent {
    /// Messages handed to the routers: one per online resource for
    /// `online`, one per account otherwise.
    pub recipients: u64,
}

/// `POST /announcements`. Answers once every message is on its way.
pub async fn send(
    State(api): State<AdminApi>,
    caller: Caller,
    Body(announcement): Body<Announcement>,
) -> Result<Json<Sent>, ApiError> {
    if announcement.body.is_empty() {
        return Err(ApiError::bad_request("bad_body", "the body is empty"));
    }
    if announcement.body.len() + announcement.subject.len() > MAX_ANNOUNCEMENT_BYTES {
        return Err(ApiError::bad_request(
            "too_long",
            format!("subject and body exceed {MAX_ANNOUNCEMENT_BYTES} bytes"),
        ));
    }
    let core = api.core();
    let message = Message::new(core, &announcement.subject, &announcement.body);
    let recipients = match announcement.to.as_str() {
        "online" => to_online(core, &message).await?,
        "all" => to_all(core, &message).await?,
        jid => {
            let jid = accounts::existing(core, jid).await?;
            message.send(core, [jid.as_str()]).await?
        }
    };
    let detail = json!({
        "subject": announcement.subject,
        "body": announcement.body,
        "recipients": recipients,
    });
    api.audit(&caller.jid, "announce", &announcement.to, detail)
        .await?;
    Ok(Json(Sent { recipients }))
}

/// Every available resource in the cluster, a registry page at a time.
pub async fn to_online(core: &Core, message: &Message) -> Result<u64, ApiError> {
    let mut sent = 0;
    let mut cursor = String::new();
    loop {
        let page = core
            .registry
            .resources_page(&cursor, MAX_LIMIT as usize)
            .await?;
        let available = page.resources.iter().filter(|resource| resource.available);
        let to = available.map(|resource| resource.full_jid.as_str());
        sent += message.send(core, to).await?;
        match page.next {
            Some(next) => cursor = next,
            None => return Ok(sent),
        }
    }
}

/// Every account of the domain, a page of the store at a time.
async fn to_all(core: &Core, message: &Message) -> Result<u64, ApiError> {
    let mut sent = 0;
    let mut after = String::new();
    loop {
        let page = core
            .store
            .accounts_page(Some(&core.domain), "", &after, MAX_LIMIT)
            .await?;
        let to = page.iter().map(|account| account.jid.as_str());
        sent += message.send(core, to).await?;
        match page.last() {
            Some(last) if page.len() == MAX_LIMIT as usize => after = last.jid.clone(),
            _ => return Ok(sent),
        }
    }
}

/// An announcement's stanza, addressed anew for each recipient.
pub struct Message {
    element: Element,
}

impl Message {
    /// A `normal` message (the type offline storage keeps) from the server.
    pub fn new(core: &Core, subject: &str, body: &str) -> Message {
        let mut element = Element::new("message", ns::CLIENT)
            .attr("from", core.domain.clone())
            .attr("id", format!("announce-{:016x}", rand::random::<u64>()));
        if !subject.is_empty() {
            element.push_child(Element::new("subject", ns::CLIENT).text(subject));
        }
        element.push_child(Element::new("body", ns::CLIENT).text(body));
        Message { element }
    }

    /// Sends it to each recipient, fully processed: the router hands one
    /// for a bare JID to every available resource of the account, or, when
    /// it has none, to the account's replica, which stores it offline (a
    /// `normal` message reaches the account when no resource takes it).
    async fn send<'a>(
        &self,
        core: &Core,
        recipients: impl IntoIterator<Item = &'a str>,
    ) -> Result<u64, ApiError> {
        let from = &core.domain;
        let mut outbox = Outbox::default();
        let mut element = self.element.clone();
        let mut sent = 0;
        for to in recipients {
            element.set_attr("to", Some(to.to_string()));
            let payload = Bytes::from(element.to_xml(ns::CLIENT));
            outbox.deliver(to, from, Kind::Message, "", payload);
            sent += 1;
        }
        if !core.send_to_any_router(outbox.frames).await {
            return Err(no_router());
        }
        Ok(sent)
    }
}
