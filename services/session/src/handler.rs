//! One frame in, the frames it produces out.

use xmppd_grpc::{Envelope, Kind, Stage, session_down, session_up};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};

use crate::outbox::Outbox;
use crate::service::Core;
use crate::shards::Work;
use crate::{iq, offline, presence};

/// Runs `work` for the account `owner`. A storage or registry failure
/// answers the stanza with `internal-server-error` rather than losing it
/// silently; the router's acknowledgement bookkeeping then moves on.
pub async fn handle(core: &Core, owner: &str, work: Work) -> Vec<session_down::Frame> {
    let mut out = Outbox::default();
    let result = match &work {
        Work::Frame(session_up::Frame::Ended(ended)) => {
            presence::session_ended(core, ended, &mut out).await
        }
        Work::Frame(session_up::Frame::Stanza(envelope)) => stanza(core, envelope, &mut out).await,
        Work::Replaced(old) => presence::gone(core, old, &mut out).await,
    };
    match (result, work) {
        (Ok(()), _) => out.frames,
        (Err(error), Work::Frame(session_up::Frame::Stanza(envelope))) => {
            tracing::error!(%error, owner, "stanza handling failed");
            let error = StanzaError::new(StanzaErrorCondition::InternalServerError);
            envelope
                .error_reply(&error, &core.domain)
                .map(session_down::Frame::Stanza)
                .into_iter()
                .collect()
        }
        (Err(error), _) => {
            tracing::error!(%error, owner, "session clean-up failed");
            Vec::new()
        }
    }
}

async fn stanza(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    match (envelope.kind(), envelope.stage()) {
        (Kind::Presence, Stage::FromClient) => presence::outbound(core, envelope, out).await,
        (Kind::Presence, _) => presence::inbound(core, envelope, out).await,
        (Kind::Iq, _) => iq::handle(core, envelope, out).await,
        (Kind::Message, _) => offline::message(core, envelope, out).await,
        (Kind::Unspecified, _) => Ok(()),
    }
}

/// Answers `envelope` with `condition`.
pub fn bounce(core: &Core, envelope: &Envelope, condition: StanzaErrorCondition, out: &mut Outbox) {
    if let Some(reply) = envelope.error_reply(&StanzaError::new(condition), &core.domain) {
        out.frames.push(session_down::Frame::Stanza(reply));
    }
}

/// The bare JID part of a normalised JID.
pub fn bare(jid: &str) -> &str {
    jid.split_once('/').map_or(jid, |(bare, _)| bare)
}
