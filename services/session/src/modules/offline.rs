//! Messages for accounts with no resource to take them: XEP-0160 offline
//! storage, handed out at the next available presence with a XEP-0203
//! delay stamp.

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kind, Stage};
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;
use xmppd_protocol::xml::Element;
use xmppd_protocol::{JidRef, MessageType, Unclaimed};

use crate::clock::{format_utc, now_ms};
use crate::handler::bounce;
use crate::module::{AccountModule, Disco, Flow, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct OfflineMessages;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(OfflineMessages))
}

#[async_trait::async_trait]
impl AccountModule for OfflineMessages {
    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::OFFLINE],
            account: &[],
        }
    }

    async fn inbound(
        &self,
        core: &Core,
        envelope: &Envelope,
        out: &mut Outbox,
    ) -> anyhow::Result<Flow> {
        if envelope.kind() != Kind::Message {
            return Ok(Flow::Continue);
        }
        message(core, envelope, out).await?;
        Ok(Flow::Done)
    }

    async fn available(&self, core: &Core, full_jid: &str, out: &mut Outbox) -> anyhow::Result<()> {
        flush(core, JidRef::new(full_jid).bare().as_str(), full_jid, out).await
    }
}

/// A message the router could not deliver (RFC 6121 §8.5.2.2, §8.5.3.2).
async fn message(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    let recipient = JidRef::new(&envelope.to).bare();
    match MessageType::parse(&envelope.r#type).unclaimed() {
        Unclaimed::Ignore => return Ok(()),
        Unclaimed::Bounce => {
            bounce(
                core,
                envelope,
                StanzaErrorCondition::ServiceUnavailable,
                out,
            );
            return Ok(());
        }
        Unclaimed::Account => {}
    }
    // A XEP-0280 carbon copy (the server's, from the account's own
    // bare JID) whose resource went away is not kept: the resources it was
    // not for had the message itself.
    if envelope.from == recipient.as_str() {
        return Ok(());
    }
    let is_account = recipient.is_account();
    let recipient = recipient.as_str();
    if !is_account || !core.store.account_exists(recipient).await? {
        bounce(
            core,
            envelope,
            StanzaErrorCondition::ServiceUnavailable,
            out,
        );
        return Ok(());
    }
    // A resource may have come online since the router looked: this runs
    // after that resource's initial presence on the same account worker. A
    // message the router already failed to deliver (stage DELIVER: its
    // resource sits on a dead node not yet reaped) is stored at once rather
    // than sent back and forth.
    let retry_delivery = envelope.stage() == Stage::FromClient;
    let online = retry_delivery
        && core
            .registry
            .resources(recipient)
            .await?
            .iter()
            .any(|r| r.available && r.priority >= 0);
    if online {
        out.deliver(
            recipient,
            &envelope.from,
            Kind::Message,
            &envelope.r#type,
            envelope.payload.clone(),
        );
        return Ok(());
    }
    let now = now_ms();
    let stamped = with_delay(&envelope.payload, &core.domain, now);
    let max = core.settings().max_offline_messages;
    if core
        .store
        .store_offline(recipient, &stamped, now, max)
        .await?
    {
        core.metrics.count("offline_stored");
    } else {
        tracing::info!(account = recipient, max, "offline storage full, bouncing");
        bounce(
            core,
            envelope,
            StanzaErrorCondition::ServiceUnavailable,
            out,
        );
    }
    Ok(())
}

/// Hands the stored messages of `user` to the resource `full` that just
/// became available.
async fn flush(core: &Core, user: &str, full: &str, out: &mut Outbox) -> anyhow::Result<()> {
    for message in core.store.take_offline(user).await? {
        let payload = Bytes::from(message.stanza);
        let (from, stanza_type) = Stanza::from_bytes(payload.clone(), ns::CLIENT)
            .map(|s| {
                (
                    s.from().unwrap_or_default().to_string(),
                    s.stanza_type().unwrap_or_default().to_string(),
                )
            })
            .unwrap_or_default();
        out.deliver(full, &from, Kind::Message, &stanza_type, payload);
        core.metrics.count("offline_delivered");
    }
    Ok(())
}

/// The stanza with `<delay xmlns='urn:xmpp:delay'/>` added, unless this
/// server already stamped it (a message that went back to storage).
fn with_delay(payload: &Bytes, domain: &str, now: i64) -> Vec<u8> {
    let Ok(mut element) = Stanza::from_bytes(payload.clone(), ns::CLIENT).and_then(|s| s.element())
    else {
        return payload.to_vec();
    };
    let stamped = element
        .children()
        .any(|child| child.is("delay", ns::DELAY) && child.get_attr("from") == Some(domain));
    if !stamped {
        element.push_child(
            Element::new("delay", ns::DELAY)
                .attr("from", domain)
                .attr("stamp", format_utc(now))
                .text("Offline storage"),
        );
    }
    element.to_xml(ns::CLIENT).into_bytes()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use xmppd_grpc::session_up;
    use xmppd_registry::{MemoryRegistry, SharedRegistry};
    use xmppd_storage::Store;

    use super::*;
    use crate::handler;
    use crate::metrics::SessionMetrics;
    use crate::service::{SessionService, Settings};
    use crate::shards::Work;

    async fn replica() -> (tempfile::TempDir, SessionService) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("xmppd.db").display());
        let store = Store::connect(&url, NonZeroU32::new(2).unwrap())
            .await
            .unwrap();
        store
            .create_account("alice@example.org", &[])
            .await
            .unwrap();
        let modules = crate::modules::all(&Default::default(), Vec::new()).unwrap();
        modules.migrate(&store).await.unwrap();
        let registry: SharedRegistry = Arc::new(MemoryRegistry::default());
        let settings = Settings {
            domain: "example.org".into(),
            node_id: "s1".into(),
            registration: false,
            scram_iterations: 4096,
            max_offline_messages: 10,
            max_resources_per_account: 0,
            max_directed_presences: 0,
            max_roster_items: 0,
            max_pending_subscriptions: 0,
            muc: Default::default(),
        };
        let service = SessionService::new(
            settings,
            store,
            registry,
            SessionMetrics::default(),
            modules,
        );
        (dir, service)
    }

    fn message(from: &str, to: &str) -> Envelope {
        Envelope {
            to: to.into(),
            from: from.into(),
            kind: Kind::Message as i32,
            r#type: "chat".into(),
            payload: Bytes::from(format!(
                "<message from='{from}' to='{to}' type='chat'><body>hi</body></message>"
            )),
            stage: Stage::Deliver as i32,
            ..Default::default()
        }
    }

    async fn handle(service: &SessionService, envelope: Envelope) {
        let work = Work::Frame(session_up::Frame::Stanza(envelope));
        let frames = handler::handle(service.core(), "alice@example.org", work)
            .await
            .frames;
        assert!(frames.is_empty(), "{frames:?}");
    }

    /// What comes back undeliverable is stored, whoever sent it (the
    /// account's own resources included), except the server's carbon
    /// copies: the account's other resources had the message itself.
    #[tokio::test]
    async fn returned_messages_are_stored_but_not_carbon_copies() {
        let (_dir, service) = replica().await;
        let store = &service.core().store;
        handle(
            &service,
            message("alice@example.org", "alice@example.org/gone"),
        )
        .await;
        assert!(
            store
                .take_offline("alice@example.org")
                .await
                .unwrap()
                .is_empty()
        );

        handle(
            &service,
            message("alice@example.org/phone", "alice@example.org/gone"),
        )
        .await;
        handle(&service, message("bob@example.org/pc", "alice@example.org")).await;
        assert_eq!(
            store.take_offline("alice@example.org").await.unwrap().len(),
            2
        );
    }
}
