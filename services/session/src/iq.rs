//! IQs to the server or to an account's bare JID: each get or set goes to
//! the module that answers its payload ([`crate::module::AccountModule::iqs`]);
//! anything no module answers gets `<service-unavailable/>` (RFC 6120 §8.4).

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kind};
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;
use xmppd_protocol::xml::Element;
use xmppd_protocol::{IqType, JidRef};

use crate::handler::refuse;
use crate::module::{Addressee, Iq, IqReply};
use crate::outbox::Outbox;
use crate::service::Core;

pub async fn handle(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    // Results and errors answer our pushes and pings: nothing to do.
    if !envelope.is_request() {
        return Ok(());
    }
    let reply = match payload_of(envelope) {
        Some(payload) => dispatch(core, envelope, &payload, out).await?,
        None => IqReply::error(StanzaErrorCondition::BadRequest),
    };
    answer(core, envelope, reply, out);
    Ok(())
}

/// The one child element a get or set must carry (RFC 6120 §8.2.3).
pub(crate) fn payload_of(envelope: &Envelope) -> Option<Element> {
    let iq = Stanza::from_bytes(envelope.payload.clone(), ns::CLIENT)
        .ok()?
        .element()
        .ok()?;
    let mut children = iq.children();
    match (children.next(), children.next()) {
        (Some(child), None) => Some(child.clone()),
        _ => None,
    }
}

fn addressee(core: &Core, envelope: &Envelope) -> Addressee {
    let user = envelope.from_jid().bare().as_str();
    if envelope.to.is_empty() || envelope.to == user {
        Addressee::OwnAccount
    } else if envelope.to == core.domain {
        Addressee::Server
    } else {
        Addressee::OtherAccount
    }
}

async fn dispatch(
    core: &Core,
    envelope: &Envelope,
    payload: &Element,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    let to = addressee(core, envelope);
    // RFC 6121 §8.5.1: no account, no answer on its behalf.
    if to == Addressee::OtherAccount
        && !core
            .store
            .account_exists(JidRef::new(&envelope.to).bare().as_str())
            .await?
    {
        return Ok(IqReply::error(StanzaErrorCondition::ServiceUnavailable));
    }
    let iq_type = envelope.iq_type().unwrap_or(IqType::Other);
    let Some(module) = core.modules.for_iq(payload, to, iq_type) else {
        return Ok(IqReply::error(StanzaErrorCondition::ServiceUnavailable));
    };
    let iq = Iq {
        envelope,
        payload,
        to,
    };
    module.iq(core, &iq, out).await
}

pub(crate) fn answer(core: &Core, envelope: &Envelope, reply: IqReply, out: &mut Outbox) {
    match reply {
        IqReply::Result(child) => {
            let from = if envelope.to.is_empty() {
                envelope.from_jid().bare().as_str()
            } else {
                &envelope.to
            };
            let mut iq = Element::new("iq", ns::CLIENT)
                .attr("type", "result")
                .attr("id", envelope.id.clone())
                .attr("from", from)
                .attr("to", envelope.from.clone());
            if let Some(child) = child {
                iq.push_child(child);
            }
            out.deliver(
                &envelope.from,
                from,
                Kind::Iq,
                "result",
                Bytes::from(iq.to_xml(ns::CLIENT)),
            );
        }
        IqReply::Error(error) => refuse(core, envelope, &error, out),
    }
}
