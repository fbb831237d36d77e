//! Shared roster groups: the members of a group see each other in their
//! rosters (subscription `both`, the group's name as a roster group) and get
//! each other's presence, without subscribing.
//!
//! The store keeps only the membership; a member's roster table holds its
//! personal items alone. Everything that reads a roster to decide what a
//! client sees or who gets presence reads it through [`roster`] or [`item`],
//! which merge the shared items in: a personal item for a contact who is
//! also a group-mate keeps its name and groups, gains the shared groups, and
//! shows `both`. Subscriptions between members stay personal state, handled
//! by `subscription.rs` as between any two accounts, and outlast the group.
//!
//! When a group changes, [`changed`] works out what its members' clients must
//! be told: roster pushes, and presence (a newcomer's to the others and
//! theirs to it; unavailable presence to one who leaves, unless a personal
//! subscription or another group still carries it). The admin API, on any
//! replica, sends those stanzas through a router as it sends announcements,
//! so they reach every member's streams wherever they are.

use std::collections::{BTreeMap, HashSet};

use xmppd_grpc::{BoundResource, Kind};
use xmppd_protocol::xml::Element;
use xmppd_storage::{Roster, RosterItem, Subscription};

use crate::modules::roster::{item_element, push_to, removed_element};
use crate::outbox::Outbox;
use crate::presence::{receives_presence, unavailable_from};
use crate::service::Core;
use crate::subscription::{blank, is_pending_only};

/// Members read a page at a time while a change is worked out.
const MEMBERS_PAGE: u32 = 500;

/// `personal` (the user's own item for `contact`, if any) as the user's
/// roster holds it once the groups both are members of, `shared`, are merged
/// in.
pub fn merged(
    personal: Option<RosterItem>,
    contact: &str,
    shared: &[String],
) -> Option<RosterItem> {
    if shared.is_empty() {
        return personal;
    }
    Some(with_groups(
        personal.unwrap_or_else(|| blank(contact)),
        shared,
    ))
}

/// `item`, a personal item, with the groups `shared` merged in (unchanged
/// when there are none).
pub fn with_groups(mut item: RosterItem, shared: &[String]) -> RosterItem {
    if shared.is_empty() {
        return item;
    }
    item.subscription = Subscription::Both;
    // Nothing left to ask for: the contact's presence comes anyway.
    item.ask_out = false;
    for group in shared {
        if !item.groups.contains(group) {
            item.groups.push(group.clone());
        }
    }
    item
}

/// The roster item of `contact` that the user's client sees: an item, or
/// its removal (no item, or one that only remembers a pending request,
/// RFC 6121 §3.1.3).
pub fn shown(item: Option<&RosterItem>, contact: &str) -> Element {
    match item.filter(|item| !is_pending_only(item)) {
        Some(item) => item_element(item),
        None => removed_element(contact),
    }
}

/// The user's roster: its personal items with its group-mates merged in, by
/// contact, under the version of the roster table (which group changes bump
/// too). Pending-only items are kept; a client is not shown them.
pub async fn roster(core: &Core, user: &str) -> anyhow::Result<Roster> {
    let personal = core.store.roster(user).await?;
    let shared = core.store.shared_contacts(user).await?;
    if shared.is_empty() {
        return Ok(personal);
    }
    let mut items: BTreeMap<String, RosterItem> = personal
        .items
        .into_iter()
        .map(|item| (item.contact.clone(), item))
        .collect();
    for contact in shared {
        let item = merged(
            items.remove(&contact.contact),
            &contact.contact,
            &contact.groups,
        );
        items.extend(item.map(|item| (contact.contact, item)));
    }
    Ok(Roster {
        version: personal.version,
        items: items.into_values().collect(),
    })
}

/// The user's item for `contact`, group-mates merged in.
pub async fn item(core: &Core, user: &str, contact: &str) -> anyhow::Result<Option<RosterItem>> {
    let personal = core.store.roster_item(user, contact).await?;
    let shared = core.store.shared_groups_between(user, contact).await?;
    Ok(merged(personal, contact, &shared))
}

/// Whether the user and `contact` are members of a group together.
pub async fn shares_group(core: &Core, user: &str, contact: &str) -> anyhow::Result<bool> {
    Ok(!core
        .store
        .shared_groups_between(user, contact)
        .await?
        .is_empty())
}

/// Every member of `group`, a page of the store at a time.
pub async fn members(core: &Core, group: &str) -> anyhow::Result<Vec<String>> {
    let mut members: Vec<String> = Vec::new();
    loop {
        let after = members.last().cloned().unwrap_or_default();
        let page = core
            .store
            .group_members_page(group, &after, MEMBERS_PAGE)
            .await?;
        let last_page = page.len() < MEMBERS_PAGE as usize;
        members.extend(page);
        if last_page {
            return Ok(members);
        }
    }
}

/// Who sees whom differently once a group changed, already in the store.
pub struct Change<'a> {
    /// The accounts that joined or left: one for a member added or removed,
    /// every member for a group deleted.
    pub subjects: &'a [String],
    /// The members that stayed, who see the subjects come or go.
    pub others: &'a [String],
    /// Whether the subjects joined (presence starts flowing) or left (it
    /// stops, unless something else still carries it).
    pub joined: bool,
}

/// Roster pushes and presence for every online account a change concerns,
/// into `out`.
pub async fn changed(core: &Core, change: &Change<'_>, out: &mut Outbox) -> anyhow::Result<()> {
    let subjects: Vec<&str> = change.subjects.iter().map(String::as_str).collect();
    let is_subject: HashSet<&str> = subjects.iter().copied().collect();
    let everyone: Vec<&str> = subjects
        .iter()
        .copied()
        .chain(change.others.iter().map(String::as_str))
        .collect();
    for &viewer in &everyone {
        // A subject's view of everyone changed; a staying member's view of
        // the subjects only.
        let contacts = if is_subject.contains(viewer) {
            &everyone
        } else {
            &subjects
        };
        let contacts = contacts
            .iter()
            .copied()
            .filter(|&contact| contact != viewer);
        tell(core, viewer, contacts, change.joined, out).await?;
    }
    Ok(())
}

/// Tells `viewer`'s resources how each of `contacts` now appears in its
/// roster, and sends its available resources' presence to those contacts
/// (or unavailable presence, once nothing carries it any more).
async fn tell<'c>(
    core: &Core,
    viewer: &str,
    contacts: impl Iterator<Item = &'c str>,
    joined: bool,
    out: &mut Outbox,
) -> anyhow::Result<()> {
    let resources = core.registry.resources(viewer).await?;
    if resources.is_empty() {
        // Its roster's new version is in the store: its next roster get
        // finds the change.
        return Ok(());
    }
    let roster = roster(core, viewer).await?;
    let available: Vec<&BoundResource> = resources.iter().filter(|r| r.available).collect();
    for contact in contacts {
        let item = roster.items.iter().find(|item| item.contact == contact);
        let full_jids = resources.iter().map(|r| r.full_jid.as_str());
        push_to(viewer, full_jids, shown(item, contact), roster.version, out);
        for resource in &available {
            if joined {
                out.deliver(
                    contact,
                    &resource.full_jid,
                    Kind::Presence,
                    "",
                    resource.presence.clone(),
                );
            } else if !item.is_some_and(receives_presence) {
                unavailable_from(&resource.full_jid, contact, out);
            }
        }
    }
    Ok(())
}

/// Deletes `jid` and everything stored for it; its group-mates' clients are
/// told it left their groups (into `out`). False if there was no such
/// account. Its streams are the caller's to end.
pub async fn delete_account(core: &Core, jid: &str, out: &mut Outbox) -> anyhow::Result<bool> {
    let mates: Vec<String> = core
        .store
        .shared_contacts(jid)
        .await?
        .into_iter()
        .map(|mate| mate.contact)
        .collect();
    if !core.store.delete_account(jid).await? {
        return Ok(false);
    }
    let subjects = [jid.to_string()];
    let change = Change {
        subjects: &subjects,
        others: &mates,
        joined: false,
    };
    changed(core, &change, out).await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROMEO: &str = "romeo@example.net";

    fn personal(subscription: Subscription, groups: &[&str]) -> RosterItem {
        RosterItem {
            name: Some("Romeo".into()),
            subscription,
            ask_out: true,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..blank(ROMEO)
        }
    }

    #[test]
    fn a_group_mate_without_a_personal_item_is_both_in_the_group() {
        let item = merged(None, ROMEO, &["Staff".into()]).unwrap();
        assert_eq!(item.subscription, Subscription::Both);
        assert_eq!(item.groups, ["Staff"]);
        assert_eq!(item.name, None);
    }

    #[test]
    fn a_personal_item_keeps_its_name_and_groups_and_gains_the_shared_ones() {
        let item = merged(
            Some(personal(Subscription::None, &["Friends", "Staff"])),
            ROMEO,
            &["Staff".into(), "Verona".into()],
        )
        .unwrap();
        assert_eq!(item.subscription, Subscription::Both);
        assert!(!item.ask_out);
        assert_eq!(item.name.as_deref(), Some("Romeo"));
        assert_eq!(item.groups, ["Friends", "Staff", "Verona"]);
    }

    #[test]
    fn without_shared_groups_the_personal_item_is_unchanged() {
        let item = personal(Subscription::To, &["Friends"]);
        assert_eq!(merged(Some(item.clone()), ROMEO, &[]), Some(item));
        assert_eq!(merged(None, ROMEO, &[]), None);
    }

    #[test]
    fn a_pending_request_alone_is_shown_as_a_removal() {
        let pending = RosterItem {
            pending_in: true,
            ..blank(ROMEO)
        };
        assert_eq!(shown(Some(&pending), ROMEO), removed_element(ROMEO));
        let shared = merged(Some(pending), ROMEO, &["Staff".into()]).unwrap();
        assert_eq!(shown(Some(&shared), ROMEO), item_element(&shared));
    }
}
