//! The presence subscription state machine of RFC 6121 §3 and Appendix A,
//! as pure functions over one roster item.

use xmppd_storage::{RosterItem, Subscription};

/// The subscription-related presence types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl Request {
    pub fn from_type(stanza_type: &str) -> Option<Self> {
        match stanza_type {
            "subscribe" => Some(Request::Subscribe),
            "subscribed" => Some(Request::Subscribed),
            "unsubscribe" => Some(Request::Unsubscribe),
            "unsubscribed" => Some(Request::Unsubscribed),
            _ => None,
        }
    }
}

/// The outcome of applying a request to the user's item.
#[derive(Debug, PartialEq, Eq)]
pub struct Transition {
    /// The item after the request; `None` removes it.
    pub item: Option<RosterItem>,
    /// Whether the item changed, so a roster push is due.
    pub changed: bool,
    /// Whether the stanza travels on (to the contact, or to the user's
    /// resources for inbound requests).
    pub forward: bool,
}

fn has_to(s: Subscription) -> bool {
    matches!(s, Subscription::To | Subscription::Both)
}

fn has_from(s: Subscription) -> bool {
    matches!(s, Subscription::From | Subscription::Both)
}

fn with(to: bool, from: bool) -> Subscription {
    match (to, from) {
        (false, false) => Subscription::None,
        (true, false) => Subscription::To,
        (false, true) => Subscription::From,
        (true, true) => Subscription::Both,
    }
}

/// An item for `contact` with no subscription, name or group.
pub fn blank(contact: &str) -> RosterItem {
    RosterItem {
        contact: contact.to_string(),
        name: None,
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        groups: Vec::new(),
    }
}

/// Whether the item exists only to remember an inbound request the user has
/// not answered: RFC 6121 §3.1.3 keeps such contacts out of the roster.
pub fn is_pending_only(item: &RosterItem) -> bool {
    item.pending_in
        && item.subscription == Subscription::None
        && !item.ask_out
        && item.name.is_none()
        && item.groups.is_empty()
}

/// The user sends `request` to `contact` (outbound processing, §3.1.2,
/// §3.1.5, §3.2.2, §3.3.2).
pub fn outbound(request: Request, contact: &str, current: Option<&RosterItem>) -> Transition {
    let before = current.cloned();
    let mut item = before.clone().unwrap_or_else(|| blank(contact));
    let sub = item.subscription;
    let forward = match request {
        Request::Subscribe => {
            if !has_to(sub) {
                item.ask_out = true;
            }
            true
        }
        Request::Unsubscribe => {
            item.subscription = with(false, has_from(sub));
            item.ask_out = false;
            true
        }
        // Without a pending request there is nothing to approve
        // (pre-approval, §3.4, is not offered).
        Request::Subscribed => {
            let approve = item.pending_in;
            if approve {
                item.subscription = with(has_to(sub), true);
                item.pending_in = false;
            }
            approve
        }
        Request::Unsubscribed => {
            let had = has_from(sub) || item.pending_in;
            item.subscription = with(has_to(sub), false);
            item.pending_in = false;
            had
        }
    };
    finish(before, item, forward)
}

/// `contact` sends `request` to the user (inbound processing, §3.1.3,
/// §3.1.6, §3.2.3, §3.3.3). `forward` here means "deliver to the user".
pub fn inbound(request: Request, contact: &str, current: Option<&RosterItem>) -> Transition {
    let before = current.cloned();
    let mut item = before.clone().unwrap_or_else(|| blank(contact));
    let sub = item.subscription;
    let forward = match request {
        Request::Subscribe => {
            // Already approved: the server answers for the user (§3.1.3).
            if has_from(sub) {
                false
            } else {
                item.pending_in = true;
                true
            }
        }
        Request::Subscribed => {
            let expected = item.ask_out;
            if expected {
                item.subscription = with(true, has_from(sub));
                item.ask_out = false;
            }
            expected
        }
        Request::Unsubscribe => {
            let had = has_from(sub) || item.pending_in;
            item.subscription = with(has_to(sub), false);
            item.pending_in = false;
            had
        }
        Request::Unsubscribed => {
            let had = has_to(sub) || item.ask_out;
            item.subscription = with(false, has_from(sub));
            item.ask_out = false;
            had
        }
    };
    finish(before, item, forward)
}

fn finish(before: Option<RosterItem>, item: RosterItem, forward: bool) -> Transition {
    let removed = item.subscription == Subscription::None
        && !item.ask_out
        && !item.pending_in
        && before.as_ref().is_none_or(is_pending_only);
    let after = (!removed).then_some(item);
    Transition {
        changed: after != before,
        item: after,
        forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "romeo@example.net";

    fn item(subscription: Subscription, ask_out: bool, pending_in: bool) -> RosterItem {
        RosterItem {
            subscription,
            ask_out,
            pending_in,
            name: Some("Romeo".into()),
            ..blank(C)
        }
    }

    #[test]
    fn subscribe_creates_pending_out_item() {
        let t = outbound(Request::Subscribe, C, None);
        let item = t.item.unwrap();
        assert!(item.ask_out && t.changed && t.forward);
        assert_eq!(item.subscription, Subscription::None);
    }

    #[test]
    fn full_handshake_reaches_both() {
        // User subscribes to contact, contact approves; then the reverse.
        let user = outbound(Request::Subscribe, C, None).item;
        let contact = inbound(Request::Subscribe, "juliet@example.com", None);
        assert!(contact.forward);
        let contact = outbound(
            Request::Subscribed,
            "juliet@example.com",
            contact.item.as_ref(),
        );
        assert!(contact.forward);
        assert_eq!(
            contact.item.as_ref().unwrap().subscription,
            Subscription::From
        );
        let user = inbound(Request::Subscribed, C, user.as_ref()).item;
        assert_eq!(user.as_ref().unwrap().subscription, Subscription::To);
        let user = inbound(Request::Subscribe, C, user.as_ref());
        let user = outbound(Request::Subscribed, C, user.item.as_ref())
            .item
            .unwrap();
        assert_eq!(user.subscription, Subscription::Both);
        assert!(!user.ask_out && !user.pending_in);
    }

    #[test]
    fn subscribe_when_already_from_is_answered_by_the_server() {
        let t = inbound(
            Request::Subscribe,
            C,
            Some(&item(Subscription::From, false, false)),
        );
        assert!(!t.forward && !t.changed);
    }

    #[test]
    fn unexpected_subscribed_is_ignored() {
        let t = inbound(
            Request::Subscribed,
            C,
            Some(&item(Subscription::None, false, false)),
        );
        assert!(!t.forward && !t.changed);
        let t = outbound(Request::Subscribed, C, None);
        assert!(!t.forward && t.item.is_none());
    }

    #[test]
    fn unsubscribe_and_unsubscribed_walk_both_down() {
        let both = item(Subscription::Both, false, false);
        let t = outbound(Request::Unsubscribe, C, Some(&both));
        assert_eq!(t.item.as_ref().unwrap().subscription, Subscription::From);
        let t = outbound(Request::Unsubscribed, C, t.item.as_ref());
        // A named item stays in the roster with subscription none.
        assert_eq!(t.item.unwrap().subscription, Subscription::None);
        let t = inbound(Request::Unsubscribed, C, Some(&both));
        assert_eq!(t.item.as_ref().unwrap().subscription, Subscription::From);
        let t = inbound(Request::Unsubscribe, C, t.item.as_ref());
        assert_eq!(t.item.unwrap().subscription, Subscription::None);
    }

    #[test]
    fn denied_request_leaves_no_trace() {
        let pending = inbound(Request::Subscribe, C, None).item.unwrap();
        assert!(is_pending_only(&pending));
        let t = outbound(Request::Unsubscribed, C, Some(&pending));
        assert!(t.item.is_none() && t.changed && t.forward);
    }
}
