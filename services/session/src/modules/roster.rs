//! Roster management (RFC 6121 §2) with XEP-0237 versioning. Presence and
//! subscriptions (`crate::presence`) change rosters too, and push through
//! [`push`]. A roster get shows the user's group-mates too
//! (`crate::shared_groups`); a group-mate cannot be removed.

use bytes::Bytes;
use xmppd_grpc::Kind;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_storage::{RosterItem, Subscription};

use crate::module::{AccountModule, Addressee, Disco, GET_OR_SET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;
use crate::{shared_groups, subscription};

pub struct Roster;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(Roster))
}

#[async_trait::async_trait]
impl AccountModule for Roster {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::ROSTER,
            name: "query",
            to: &[Addressee::OwnAccount],
            types: GET_OR_SET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::ROSTER_VER],
            account: &[],
        }
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
        if iq.is_get() {
            get(core, iq.account(), iq.payload).await
        } else {
            set(core, iq.account(), iq.payload, out).await
        }
    }
}

/// Longest group name or item name accepted, in bytes.
const MAX_NAME_BYTES: usize = 1023;

pub fn item_element(item: &RosterItem) -> Element {
    let mut element = Element::new("item", ns::ROSTER)
        .attr("jid", item.contact.clone())
        .attr("subscription", item.subscription.as_str());
    if let Some(name) = &item.name {
        element.set_attr("name", Some(name.clone()));
    }
    if item.ask_out {
        element.set_attr("ask", Some("subscribe".into()));
    }
    for group in &item.groups {
        element.push_child(Element::new("group", ns::ROSTER).text(group.clone()));
    }
    element
}

pub fn removed_element(contact: &str) -> Element {
    Element::new("item", ns::ROSTER)
        .attr("jid", contact)
        .attr("subscription", "remove")
}

/// Sends a roster push (§2.1.6) to every resource of `user`.
pub async fn push(
    core: &Core,
    user: &str,
    item: Element,
    version: i64,
    out: &mut Outbox,
) -> anyhow::Result<()> {
    let resources = core.registry.resources(user).await?;
    push_to(
        user,
        resources.iter().map(|r| r.full_jid.as_str()),
        item,
        version,
        out,
    );
    Ok(())
}

/// Sends a roster push (§2.1.6) to `resources` of `user`.
pub fn push_to<'r>(
    user: &str,
    resources: impl IntoIterator<Item = &'r str>,
    item: Element,
    version: i64,
    out: &mut Outbox,
) {
    let query = Element::new("query", ns::ROSTER)
        .attr("ver", version.to_string())
        .child(item);
    out.push_iq(user, resources, &query);
}

async fn get(core: &Core, user: &str, query: &Element) -> anyhow::Result<IqReply> {
    let roster = shared_groups::roster(core, user).await?;
    let version = roster.version.to_string();
    // XEP-0237: an up-to-date cache gets an empty result.
    if query.get_attr("ver") == Some(version.as_str()) {
        return Ok(IqReply::Result(None));
    }
    let mut answer = Element::new("query", ns::ROSTER).attr("ver", version);
    for item in roster.items.iter().filter(|item| is_contact(item)) {
        answer.push_child(item_element(item));
    }
    Ok(IqReply::with(answer))
}

async fn set(
    core: &Core,
    user: &str,
    query: &Element,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    let mut items = query
        .children()
        .filter(|child| child.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Ok(IqReply::error(StanzaErrorCondition::BadRequest));
    };
    let Some(contact) = item.get_attr("jid").and_then(|jid| Jid::parse(jid).ok()) else {
        return Ok(IqReply::error(StanzaErrorCondition::JidMalformed));
    };
    let contact = contact.to_string();
    if contact == user {
        return Ok(IqReply::error(StanzaErrorCondition::NotAllowed));
    }
    let current = core.store.roster_item(user, &contact).await?;
    let shared = core.store.shared_groups_between(user, &contact).await?;
    if item.get_attr("subscription") == Some("remove") {
        // A group-mate stays as long as the group does (as in Openfire).
        if !shared.is_empty() {
            return Ok(IqReply::error(StanzaErrorCondition::NotAcceptable));
        }
        return remove(core, user, &contact, current, out).await;
    }
    let Some(mut edited) = edited_item(item, &contact, current.as_ref()) else {
        return Ok(IqReply::error(StanzaErrorCondition::NotAcceptable));
    };
    // The shared groups come from the groups themselves: kept personally,
    // they would outlast the membership.
    edited.groups.retain(|group| !shared.contains(group));
    if adds_contact(current.as_ref(), Some(&edited)) && contacts_full(core, user).await? {
        return Ok(IqReply::error(StanzaErrorCondition::NotAllowed));
    }
    let version = core.store.put_roster_item(user, &edited).await?;
    let seen = shared_groups::with_groups(edited, &shared);
    push(core, user, item_element(&seen), version, out).await?;
    Ok(IqReply::Result(None))
}

/// The item as the client edits it: name and groups change, the
/// subscription state stays the server's.
fn edited_item(item: &Element, contact: &str, current: Option<&RosterItem>) -> Option<RosterItem> {
    let name = item
        .get_attr("name")
        .filter(|name| !name.is_empty())
        .map(str::to_string);
    let mut groups: Vec<String> = Vec::new();
    for group in item
        .children()
        .filter(|child| child.is("group", ns::ROSTER))
    {
        let group = group.text_content();
        // §2.1.2.2: empty and duplicate groups are errors.
        if group.is_empty() || group.len() > MAX_NAME_BYTES || groups.contains(&group) {
            return None;
        }
        groups.push(group);
    }
    if name
        .as_ref()
        .is_some_and(|name| name.len() > MAX_NAME_BYTES)
    {
        return None;
    }
    let base = current.cloned().unwrap_or(RosterItem {
        contact: contact.to_string(),
        name: None,
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        groups: Vec::new(),
    });
    Some(RosterItem {
        name,
        groups,
        ..base
    })
}

/// Whether `item` is a contact of the roster a client sees, rather than
/// only a request waiting for the user's answer (§3.1.3).
fn is_contact(item: &RosterItem) -> bool {
    !subscription::is_pending_only(item)
}

/// Whether a change of one item from `before` to `after` brings a contact
/// into the roster, which `limits.max_roster_items` bounds.
pub fn adds_contact(before: Option<&RosterItem>, after: Option<&RosterItem>) -> bool {
    !before.is_some_and(is_contact) && after.is_some_and(is_contact)
}

/// Whether a change of one item from `before` to `after` is a new
/// subscription request waiting for the user's answer, which
/// `limits.max_pending_subscriptions` bounds.
pub fn adds_request(before: Option<&RosterItem>, after: Option<&RosterItem>) -> bool {
    !before.is_some_and(|item| item.pending_in) && after.is_some_and(|item| item.pending_in)
}

/// Whether `user`'s roster already holds `limits.max_roster_items` contacts.
pub async fn contacts_full(core: &Core, user: &str) -> anyhow::Result<bool> {
    holds_at_least(core, user, core.settings().max_roster_items, is_contact).await
}

/// Whether `user` already has `limits.max_pending_subscriptions` requests
/// waiting for an answer.
pub async fn requests_full(core: &Core, user: &str) -> anyhow::Result<bool> {
    let max = core.settings().max_pending_subscriptions;
    holds_at_least(core, user, max, |item| item.pending_in).await
}

/// Whether `user`'s roster has `max` items (0: no limit) that `counted` picks.
/// The whole roster is read, as a roster get reads it: only changes that
/// would grow it ask.
async fn holds_at_least(
    core: &Core,
    user: &str,
    max: u32,
    counted: fn(&RosterItem) -> bool,
) -> anyhow::Result<bool> {
    if max == 0 {
        return Ok(false);
    }
    let roster = core.store.roster(user).await?;
    let count = roster.items.iter().filter(|item| counted(item)).count();
    Ok(count >= usize::try_from(max).unwrap_or(usize::MAX))
}

/// §2.5: removing an item also cancels the subscriptions both ways.
async fn remove(
    core: &Core,
    user: &str,
    contact: &str,
    current: Option<RosterItem>,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    let Some(current) = current else {
        return Ok(IqReply::error(StanzaErrorCondition::ItemNotFound));
    };
    let cancels = [
        (
            matches!(current.subscription, Subscription::To | Subscription::Both)
                || current.ask_out,
            "unsubscribe",
        ),
        (
            matches!(
                current.subscription,
                Subscription::From | Subscription::Both
            ) || current.pending_in,
            "unsubscribed",
        ),
    ];
    for (_, stanza_type) in cancels.iter().filter(|(due, _)| *due) {
        let stanza = Element::new("presence", ns::CLIENT)
            .attr("from", user)
            .attr("to", contact)
            .attr("type", *stanza_type);
        out.inbound(
            contact,
            user,
            Kind::Presence,
            stanza_type,
            Bytes::from(stanza.to_xml(ns::CLIENT)),
        );
    }
    if let Some(version) = core.store.remove_roster_item(user, contact).await? {
        push(core, user, removed_element(contact), version, out).await?;
    }
    Ok(IqReply::Result(None))
}
