//! XEP-0191 Blocking Command: an account's blocklist, its pushes, and its
//! enforcement.
//!
//! Enforcement happens in two places, and this module feeds both:
//! - the router, for stanzas between online accounts: the blocklist is the
//!   account's routing policy (`AccountPolicy.blocked`), which the router
//!   reads with the account's resources and applies in both directions
//!   (`services/router/src/policy.rs`);
//! - the account's replica, for stanzas that reach it rather than a
//!   resource (a message to store offline, a subscription request, a probe,
//!   an IQ to the bare JID): [`Blocking::inbound`].

mod store;

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::Deserialize;
use xmppd_grpc::{AccountPolicy, Envelope, Kind, ResourceFlags, session_down};
use xmppd_protocol::JidRef;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_storage::{Schema, Subscription};

use crate::module::{
    AccountModule, Addressee, Disco, Flow, GET, Iq, IqReply, IqRoute, SET, Section,
};
use crate::outbox::Outbox;
use crate::service::Core;

/// `[modules.blocking]`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// Most JIDs one account may block.
    max_items: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_items: 1000 }
    }
}

pub struct Blocking {
    max_items: usize,
}

pub fn module(section: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    let config: Config = section.keys()?;
    Ok(Box::new(Blocking {
        max_items: config.max_items,
    }))
}

#[async_trait::async_trait]
impl AccountModule for Blocking {
    fn iqs(&self) -> &'static [IqRoute] {
        const OWN: &[Addressee] = &[Addressee::OwnAccount];
        &[
            IqRoute {
                namespace: ns::BLOCKING,
                name: "blocklist",
                to: OWN,
                types: GET,
            },
            IqRoute {
                namespace: ns::BLOCKING,
                name: "block",
                to: OWN,
                types: SET,
            },
            IqRoute {
                namespace: ns::BLOCKING,
                name: "unblock",
                to: OWN,
                types: SET,
            },
        ]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::BLOCKING],
            account: &[],
        }
    }

    fn schema(&self) -> Option<&'static Schema> {
        Some(&store::SCHEMA)
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
        match iq.payload.name() {
            "blocklist" => blocklist(core, iq).await,
            "block" => self.block(core, iq, out).await,
            _ => unblock(core, iq, out).await,
        }
    }

    /// §3.3: what a blocked contact sends the user never reaches the user:
    /// presence silently, a message or a request with `<service-unavailable/>`
    /// (so that the user appears offline), anything else silently.
    async fn inbound(
        &self,
        core: &Core,
        envelope: &Envelope,
        out: &mut Outbox,
    ) -> anyhow::Result<Flow> {
        let user = JidRef::new(&envelope.to).bare();
        if !user.is_account() || envelope.from.is_empty() || envelope.from_jid().bare() == user {
            return Ok(Flow::Continue);
        }
        let user = user.as_str();
        let policy = AccountPolicy {
            blocked: store::list(&core.store, user).await?,
        };
        if !policy.blocks(&envelope.from) {
            return Ok(Flow::Continue);
        }
        let error = StanzaError::new(StanzaErrorCondition::ServiceUnavailable);
        if let Some(refusal) = envelope
            .refusal(&error, &core.domain)
            .filter(|_| envelope.expects_answer())
        {
            out.frames.push(session_down::Frame::Stanza(refusal));
        }
        core.metrics.count("blocked");
        Ok(Flow::Done)
    }

    async fn policy(
        &self,
        core: &Core,
        account: &str,
        policy: &mut AccountPolicy,
    ) -> anyhow::Result<()> {
        policy.blocked = store::list(&core.store, account).await?;
        Ok(())
    }
}

/// §3.2: the blocklist; the resource that asked gets the pushes from now on.
async fn blocklist(core: &Core, iq: &Iq<'_>) -> anyhow::Result<IqReply> {
    let full = &iq.envelope.from;
    if let Some(session) = core.registry.session(full).await? {
        let flags = ResourceFlags {
            blocklist_pushes: true,
            ..session.flags.unwrap_or_default()
        };
        core.registry
            .set_flags(full, session.conn_id, flags)
            .await?;
    }
    let mut list = Element::new("blocklist", ns::BLOCKING);
    for jid in store::list(&core.store, iq.account()).await? {
        list.push_child(item(&jid));
    }
    Ok(IqReply::with(list))
}

impl Blocking {
    /// §3.3.
    async fn block(&self, core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
        let user = iq.account();
        let jids = match items(iq.payload) {
            Ok(jids) if jids.is_empty() => {
                return Ok(IqReply::error(StanzaErrorCondition::BadRequest));
            }
            Ok(jids) => jids,
            Err(condition) => return Ok(IqReply::error(condition)),
        };
        let before = AccountPolicy {
            blocked: store::list(&core.store, user).await?,
        };
        let new: Vec<String> = jids
            .into_iter()
            .filter(|jid| before.blocked.binary_search(jid).is_err())
            .collect();
        if before.blocked.len() + new.len() > self.max_items {
            let error = StanzaError::new(StanzaErrorCondition::PolicyViolation)
                .with_text(format!("at most {} JIDs can be blocked", self.max_items));
            return Ok(IqReply::Error(error));
        }
        store::add(&core.store, user, &new).await?;
        let after = core.refresh_policy(user).await?;
        // Contacts newly blocked see the user go offline, and the user sees
        // them go offline.
        let newly_blocked = |contact: &str| after.blocks(contact) && !before.blocks(contact);
        hide_presence(core, user, &newly_blocked, out).await?;
        push(core, user, "block", &new, out).await?;
        Ok(IqReply::Result(None))
    }
}

/// §3.4 and §3.5.
async fn unblock(core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
    let user = iq.account();
    let jids = match items(iq.payload) {
        Ok(jids) => jids,
        Err(condition) => return Ok(IqReply::error(condition)),
    };
    let before = AccountPolicy {
        blocked: store::list(&core.store, user).await?,
    };
    let all = jids.is_empty();
    store::remove(&core.store, user, (!all).then_some(&jids[..])).await?;
    let after = core.refresh_policy(user).await?;
    let unblocked = |contact: &str| before.blocks(contact) && !after.blocks(contact);
    show_presence(core, user, &unblocked, out).await?;
    push(core, user, "unblock", &jids, out).await?;
    Ok(IqReply::Result(None))
}

/// The normalised JIDs of a command's `<item jid=…/>` children.
fn items(command: &Element) -> Result<Vec<String>, StanzaErrorCondition> {
    let mut jids = BTreeSet::new();
    for child in command.children().filter(|c| c.is("item", ns::BLOCKING)) {
        let jid = child
            .get_attr("jid")
            .ok_or(StanzaErrorCondition::BadRequest)?;
        let jid = Jid::parse(jid).map_err(|_| StanzaErrorCondition::JidMalformed)?;
        jids.insert(jid.to_string());
    }
    Ok(jids.into_iter().collect())
}

fn item(jid: &str) -> Element {
    Element::new("item", ns::BLOCKING).attr("jid", jid)
}

/// The command, pushed to the account's resources that retrieved the
/// blocklist (§3.3, §3.4).
async fn push(
    core: &Core,
    user: &str,
    command: &str,
    jids: &[String],
    out: &mut Outbox,
) -> anyhow::Result<()> {
    let mut payload = Element::new(command, ns::BLOCKING);
    for jid in jids {
        payload.push_child(item(jid));
    }
    let resources = core.registry.resources(user).await?;
    let interested = resources
        .iter()
        .filter(|r| r.flags.is_some_and(|flags| flags.blocklist_pushes))
        .map(|r| r.full_jid.as_str());
    out.push_iq(user, interested, &payload);
    Ok(())
}

/// On block: unavailable presence from the user's available resources to
/// each contact now blocked that received the user's presence, and from
/// the contact's available resources to the user's.
///
/// These are the server's own stanzas on both accounts' behalf, sent with
/// the server's domain in the envelope (the payload names the contact or
/// the user): the router applies the new policy to anything from the user
/// to the contact, or from the contact to the user, and these must pass.
async fn hide_presence(
    core: &Core,
    user: &str,
    newly_blocked: &(dyn Fn(&str) -> bool + Sync),
    out: &mut Outbox,
) -> anyhow::Result<()> {
    let roster = core.store.roster(user).await?;
    let contacts = roster
        .items
        .iter()
        .filter(|item| newly_blocked(&item.contact));
    let mine = available(core, user).await?;
    for item in contacts {
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            for resource in &mine {
                unavailable(core, resource, &item.contact, out);
            }
        }
        if matches!(item.subscription, Subscription::To | Subscription::Both) {
            for theirs in available(core, &item.contact).await? {
                for resource in &mine {
                    unavailable(core, &theirs, resource, out);
                }
            }
        }
    }
    Ok(())
}

/// On unblock (§3.4): the user's current presence to each contact unblocked
/// that is subscribed to it, and a probe so that the user sees the
/// contact's again.
async fn show_presence(
    core: &Core,
    user: &str,
    unblocked: &(dyn Fn(&str) -> bool + Sync),
    out: &mut Outbox,
) -> anyhow::Result<()> {
    let roster = core.store.roster(user).await?;
    let resources = core.registry.resources(user).await?;
    for item in roster.items.iter().filter(|item| unblocked(&item.contact)) {
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            for resource in resources.iter().filter(|r| r.available) {
                out.deliver(
                    &item.contact,
                    &resource.full_jid,
                    Kind::Presence,
                    "",
                    resource.presence.clone(),
                );
            }
        }
        if matches!(item.subscription, Subscription::To | Subscription::Both) {
            let probe = Element::new("presence", ns::CLIENT)
                .attr("from", user)
                .attr("to", item.contact.clone())
                .attr("type", "probe");
            out.inbound(
                &item.contact,
                user,
                Kind::Presence,
                "probe",
                Bytes::from(probe.to_xml(ns::CLIENT)),
            );
        }
    }
    Ok(())
}

async fn available(core: &Core, account: &str) -> anyhow::Result<Vec<String>> {
    let resources = core.registry.resources(account).await?;
    Ok(resources
        .into_iter()
        .filter(|r| r.available)
        .map(|r| r.full_jid)
        .collect())
}

fn unavailable(core: &Core, from: &str, to: &str, out: &mut Outbox) {
    let presence = Element::new("presence", ns::CLIENT)
        .attr("from", from)
        .attr("to", to)
        .attr("type", "unavailable");
    out.deliver(
        to,
        &core.domain,
        Kind::Presence,
        "unavailable",
        Bytes::from(presence.to_xml(ns::CLIENT)),
    );
}
