//! Presence (RFC 6121 §4): broadcast, probes, directed presence, and the
//! subscription requests of §3 with their roster updates. Group-mates
//! (`crate::shared_groups`) get each other's presence as if subscribed both
//! ways: the rules below read rosters with them merged in.

use bytes::Bytes;
use xmppd_grpc::{BoundResource, Envelope, Kind, StreamEnded, session_up};
use xmppd_protocol::JidRef;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_stanza};
use xmppd_protocol::xml::Element;
use xmppd_registry::Unbound;
use xmppd_storage::{RosterItem, Subscription};

use crate::clock::now_ms;
use crate::modules::roster;
use crate::outbox::Outbox;
use crate::service::Core;
use crate::shards::Work;
use crate::shared_groups;
use crate::subscription::{self, Request, Transition};

type Result = anyhow::Result<()>;

/// Whether the contact of the user's `item` gets the user's presence.
pub fn receives_presence(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::From | Subscription::Both)
}

fn sees_presence(item: &RosterItem) -> bool {
    matches!(item.subscription, Subscription::To | Subscription::Both)
}

/// A presence stanza built by the server.
fn presence(from: &str, to: &str, stanza_type: &str) -> Element {
    let mut element = Element::new("presence", ns::CLIENT).attr("from", from);
    if !to.is_empty() {
        element.set_attr("to", Some(to.to_string()));
    }
    if !stanza_type.is_empty() {
        element.set_attr("type", Some(stanza_type.to_string()));
    }
    element
}

fn to_bytes(element: &Element) -> Bytes {
    Bytes::from(element.to_xml(ns::CLIENT))
}

/// Tells `contact` that the resource `full` is unavailable.
pub fn unavailable_from(full: &str, contact: &str, out: &mut Outbox) {
    let gone = presence(full, contact, "unavailable");
    out.deliver(
        contact,
        full,
        Kind::Presence,
        "unavailable",
        to_bytes(&gone),
    );
}

/// Presence a client sent: outbound processing by the sender's replica.
pub async fn outbound(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    if let Some(request) = Request::from_type(&envelope.r#type) {
        return subscription_outbound(core, envelope, request, out).await;
    }
    let to_server = envelope.to.is_empty() || envelope.to == core.domain;
    match (to_server, envelope.r#type.as_str()) {
        (true, "") => available(core, envelope, out).await,
        (true, "unavailable") => {
            unavailable(core, &envelope.from, envelope.payload.clone(), out).await
        }
        (false, "" | "unavailable") => directed(core, envelope, out).await,
        (false, "error") => {
            out.deliver(
                &envelope.to,
                &envelope.from,
                Kind::Presence,
                "error",
                envelope.payload.clone(),
            );
            Ok(())
        }
        // Clients do not probe, and unknown types carry nothing to act on.
        _ => Ok(()),
    }
}

/// Presence from another account's replica: subscription requests and probes.
pub async fn inbound(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    let user = JidRef::new(&envelope.to).bare().as_str();
    let contact = envelope.from_jid().bare().as_str();
    if envelope.r#type == "probe" {
        return probe(core, user, contact, out).await;
    }
    let Some(request) = Request::from_type(&envelope.r#type) else {
        return Ok(());
    };
    let current = core.store.roster_item(user, contact).await?;
    let transition = subscription::inbound(request, contact, current.as_ref());
    if roster::adds_request(current.as_ref(), transition.item.as_ref())
        && roster::requests_full(core, user).await?
    {
        // The requests already waiting stay; the requester learns that this
        // one was not kept, rather than waiting for an answer that cannot come.
        refuse(envelope, StanzaErrorCondition::PolicyViolation, out);
        return Ok(());
    }
    apply(core, user, contact, current.as_ref(), &transition, out).await?;
    // §3.3.3: a subscriber who leaves stops seeing the user online, which
    // only the user's side can say for each of its resources; a group-mate
    // keeps seeing it.
    if request == Request::Unsubscribe
        && current.as_ref().is_some_and(receives_presence)
        && !shared_groups::shares_group(core, user, contact).await?
    {
        for resource in available_resources(core, user).await? {
            unavailable_from(&resource.full_jid, contact, out);
        }
    }
    if request == Request::Subscribe && !transition.forward {
        // Already approved: the server answers for the user (§3.1.3).
        out.inbound(
            contact,
            user,
            Kind::Presence,
            "subscribed",
            to_bytes(&presence(user, contact, "subscribed")),
        );
    }
    if transition.forward {
        let stanza = presence(contact, user, &envelope.r#type);
        out.deliver(
            user,
            contact,
            Kind::Presence,
            &envelope.r#type,
            to_bytes(&stanza),
        );
    }
    Ok(())
}

/// §3.1.2, §3.1.5, §3.2.2, §3.3.2.
async fn subscription_outbound(
    core: &Core,
    envelope: &Envelope,
    request: Request,
    out: &mut Outbox,
) -> Result {
    let user = envelope.from_jid().bare().as_str();
    let contact = JidRef::new(&envelope.to).bare().as_str();
    if contact == user || contact.is_empty() {
        return Ok(());
    }
    let current = core.store.roster_item(user, contact).await?;
    let transition = subscription::outbound(request, contact, current.as_ref());
    if roster::adds_contact(current.as_ref(), transition.item.as_ref())
        && roster::contacts_full(core, user).await?
    {
        refuse(envelope, StanzaErrorCondition::NotAllowed, out);
        return Ok(());
    }
    apply(core, user, contact, current.as_ref(), &transition, out).await?;
    if !transition.forward {
        return Ok(());
    }
    // Subscription stanzas leave with the user's bare JID (§3.1.2).
    let stanza = presence(user, contact, &envelope.r#type);
    out.inbound(
        contact,
        user,
        Kind::Presence,
        &envelope.r#type,
        to_bytes(&stanza),
    );
    let resources = available_resources(core, user).await?;
    match request {
        // The new subscriber sees the user's current presence at once.
        Request::Subscribed => {
            for resource in &resources {
                out.deliver(
                    contact,
                    &resource.full_jid,
                    Kind::Presence,
                    "",
                    resource.presence.clone(),
                );
            }
        }
        // A group-mate keeps seeing the user.
        Request::Unsubscribed => {
            if !shared_groups::shares_group(core, user, contact).await? {
                for resource in &resources {
                    unavailable_from(&resource.full_jid, contact, out);
                }
            }
        }
        Request::Subscribe | Request::Unsubscribe => {}
    }
    Ok(())
}

/// Stores a subscription transition and pushes it to the user's resources
/// if what their roster shows changed: not when only a pending inbound
/// request did, which the item a client sees does not show (§3.1.3), nor
/// for a group-mate, whom the group shows as `both` whatever the personal
/// state.
async fn apply(
    core: &Core,
    user: &str,
    contact: &str,
    before: Option<&RosterItem>,
    transition: &Transition,
    out: &mut Outbox,
) -> Result {
    if !transition.changed {
        return Ok(());
    }
    let version = match &transition.item {
        Some(item) => core.store.put_roster_item(user, item).await?,
        None => match core.store.remove_roster_item(user, contact).await? {
            Some(version) => version,
            None => return Ok(()),
        },
    };
    let shared = core.store.shared_groups_between(user, contact).await?;
    let seen = |item: Option<&RosterItem>| {
        let item = shared_groups::merged(item.cloned(), contact, &shared);
        shared_groups::shown(item.as_ref(), contact)
    };
    let (before, after) = (seen(before), seen(transition.item.as_ref()));
    if before == after {
        return Ok(());
    }
    roster::push(core, user, after, version, out).await
}

/// §4.3.2: a contact asks for the user's current presence.
async fn probe(core: &Core, user: &str, contact: &str, out: &mut Outbox) -> Result {
    let item = shared_groups::item(core, user, contact).await?;
    if !item.as_ref().is_some_and(receives_presence) {
        return Ok(());
    }
    let resources = available_resources(core, user).await?;
    if resources.is_empty() {
        let gone = presence(user, contact, "unavailable");
        out.deliver(
            contact,
            user,
            Kind::Presence,
            "unavailable",
            to_bytes(&gone),
        );
    }
    for resource in resources {
        out.deliver(
            contact,
            &resource.full_jid,
            Kind::Presence,
            "",
            resource.presence,
        );
    }
    Ok(())
}

async fn available_resources(core: &Core, user: &str) -> anyhow::Result<Vec<BoundResource>> {
    let mut resources = core.registry.resources(user).await?;
    resources.retain(|resource| resource.available);
    Ok(resources)
}

/// §4.2 initial presence and §4.4 later updates.
async fn available(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    let full = envelope.from.as_str();
    let user = JidRef::new(full).bare().as_str();
    let Some(session) = core.registry.session(full).await? else {
        return Ok(());
    };
    let priority = priority_of(&envelope.payload);
    core.registry
        .set_presence(
            full,
            session.conn_id,
            true,
            priority,
            envelope.payload.clone(),
        )
        .await?;
    // Read after the presence is stored: a group change made meanwhile
    // either is in this roster or finds this resource available and sends
    // its presence itself (`shared_groups::changed`).
    let roster = shared_groups::roster(core, user).await?;
    for item in roster.items.iter().filter(|item| receives_presence(item)) {
        out.deliver(
            &item.contact,
            full,
            Kind::Presence,
            "",
            envelope.payload.clone(),
        );
    }
    // The user's own resources, this one included, see it too.
    out.deliver(user, full, Kind::Presence, "", envelope.payload.clone());
    if session.available {
        return Ok(());
    }
    // Initial presence: learn the contacts' presence, and hand over what
    // waited while the user was away.
    for item in roster.items.iter().filter(|item| sees_presence(item)) {
        let probe = presence(user, &item.contact, "probe");
        out.inbound(
            &item.contact,
            user,
            Kind::Presence,
            "probe",
            to_bytes(&probe),
        );
    }
    for other in available_resources(core, user).await? {
        if other.full_jid != full {
            out.deliver(full, &other.full_jid, Kind::Presence, "", other.presence);
        }
    }
    for item in roster.items.iter().filter(|item| item.pending_in) {
        let request = presence(&item.contact, user, "subscribe");
        out.deliver(
            full,
            &item.contact,
            Kind::Presence,
            "subscribe",
            to_bytes(&request),
        );
    }
    for module in core.modules.iter() {
        module.available(core, full, out).await?;
    }
    Ok(())
}

/// `<priority/>` of an available presence, 0 when absent or invalid.
fn priority_of(payload: &Bytes) -> i32 {
    Stanza::from_bytes(payload.clone(), ns::CLIENT)
        .ok()
        .and_then(|stanza| stanza.element().ok())
        .and_then(|element| {
            element
                .get_child("priority", ns::CLIENT)
                .and_then(|priority| priority.text_content().trim().parse::<i8>().ok())
        })
        .map_or(0, i32::from)
}

/// §4.5: the resource goes unavailable but stays connected.
async fn unavailable(core: &Core, full: &str, payload: Bytes, out: &mut Outbox) -> Result {
    let Some(session) = core.registry.session(full).await? else {
        return Ok(());
    };
    core.registry
        .set_presence(full, session.conn_id, false, 0, Bytes::new())
        .await?;
    let directed = core.registry.take_directed(full).await?;
    broadcast_unavailable(core, full, session.available, &directed, payload, out).await
}

/// The client stream closed, or its connection-manager died.
/// A session ended: its resource is unbound, and [`gone`] tells who saw it.
/// A failure says which step to do again: the whole end if the unbind
/// failed, only the telling if that did (the resource is unbound already,
/// so its end would find nothing to do).
pub async fn session_ended(
    core: &Core,
    ended: &StreamEnded,
    out: &mut Outbox,
) -> std::result::Result<(), (anyhow::Error, Work)> {
    let removed = core
        .registry
        .unbind(&ended.full_jid, &ended.node_id, ended.conn_id)
        .await
        .map_err(|error| {
            let again = Work::Frame(session_up::Frame::Ended(ended.clone()));
            (error.into(), again)
        })?;
    // A replaced session's late end must not touch its replacement.
    let Some(unbound) = removed else {
        return Ok(());
    };
    core.metrics.count("unbound");
    match gone(core, &unbound, out).await {
        Ok(()) => Ok(()),
        Err(error) => Err((error, Work::Replaced(unbound))),
    }
}

/// A session over, by its end or by a new one of its full JID taking its
/// place (RFC 6120 §7.7.2.2): whoever saw it available is told it is not.
pub async fn gone(core: &Core, ended: &Unbound, out: &mut Outbox) -> Result {
    let Unbound {
        session,
        directed,
        policy,
    } = ended;
    let payload = to_bytes(&presence(&session.full_jid, "", "unavailable"));
    let mut broadcast = Outbox::default();
    broadcast_unavailable(
        core,
        &session.full_jid,
        session.available,
        directed,
        payload,
        &mut broadcast,
    )
    .await?;
    // The account's last resource took its policy out of the registry, so
    // the router can no longer apply it to what is sent on its behalf.
    if let Some(policy) = policy {
        broadcast
            .frames
            .retain(|frame| !policy.blocks(frame_recipient(frame)));
    }
    out.frames.append(&mut broadcast.frames);
    Ok(())
}

fn frame_recipient(frame: &xmppd_grpc::session_down::Frame) -> &str {
    match frame {
        xmppd_grpc::session_down::Frame::Stanza(envelope) => &envelope.to,
        _ => "",
    }
}

/// Tells `directed`, and the roster if the resource was available, that it
/// no longer is.
async fn broadcast_unavailable(
    core: &Core,
    full: &str,
    was_available: bool,
    directed: &[String],
    payload: Bytes,
    out: &mut Outbox,
) -> Result {
    let user = JidRef::new(full).bare().as_str();
    for to in directed {
        out.deliver(to, full, Kind::Presence, "unavailable", payload.clone());
    }
    if !was_available {
        return Ok(());
    }
    let roster = shared_groups::roster(core, user).await?;
    for item in roster.items.iter().filter(|item| receives_presence(item)) {
        out.deliver(
            &item.contact,
            full,
            Kind::Presence,
            "unavailable",
            payload.clone(),
        );
    }
    out.deliver(user, full, Kind::Presence, "unavailable", payload.clone());
    if available_resources(core, user).await?.is_empty() {
        let status = status_of(&payload);
        core.store
            .set_last_activity(user, now_ms(), &status)
            .await?;
    }
    Ok(())
}

fn status_of(payload: &Bytes) -> String {
    Stanza::from_bytes(payload.clone(), ns::CLIENT)
        .ok()
        .and_then(|stanza| stanza.element().ok())
        .and_then(|element| {
            element
                .get_child("status", ns::CLIENT)
                .map(Element::text_content)
        })
        .unwrap_or_default()
}

/// Answers the sender of `envelope` with a presence error.
fn refuse(envelope: &Envelope, condition: StanzaErrorCondition, out: &mut Outbox) {
    let stanza = Stanza::from_bytes(envelope.payload.clone(), ns::CLIENT).ok();
    let id = stanza.as_ref().and_then(Stanza::id);
    let error = error_stanza(
        "presence",
        id,
        &envelope.to,
        &envelope.from,
        &StanzaError::new(condition),
    );
    out.deliver(&envelope.from, &envelope.to, Kind::Presence, "error", error);
}

/// §4.6: presence sent to one entity rather than broadcast.
async fn directed(core: &Core, envelope: &Envelope, out: &mut Outbox) -> Result {
    let full = envelope.from.as_str();
    let to = envelope.to.as_str();
    let item = shared_groups::item(
        core,
        JidRef::new(full).bare().as_str(),
        JidRef::new(to).bare().as_str(),
    )
    .await?;
    // Contacts that get broadcasts need no tracking.
    if !item.as_ref().is_some_and(receives_presence) {
        if envelope.r#type.is_empty() {
            let max = core.settings().max_directed_presences;
            if !core.registry.add_directed(full, to, max).await? {
                // Each one tracked costs an unavailable presence when the
                // session ends: past the limit, refused rather than untracked.
                refuse(envelope, StanzaErrorCondition::PolicyViolation, out);
                return Ok(());
            }
        } else {
            core.registry.remove_directed(full, to).await?;
        }
    }
    out.deliver(
        to,
        full,
        Kind::Presence,
        &envelope.r#type,
        envelope.payload.clone(),
    );
    Ok(())
}
