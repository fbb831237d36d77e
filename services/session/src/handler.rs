//! One frame in, the frames it produces out.

use tracing::{Instrument, Span};
use xmppd_grpc::{Envelope, Kind, Stage, session_down, session_up};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_runtime::{stanza_span, traces};

use crate::module::Flow;
use crate::outbox::Outbox;
use crate::service::Core;
use crate::shards::Work;
use crate::{iq, muc, presence};

/// What a job produced: frames to send, and, if a session's end could not
/// be cleaned up (the registry or the store failed), the work to try again
/// later (`shards.rs`), so that a failure neither leaves a dead resource
/// bound nor its contacts believing it available.
#[derive(Default)]
pub struct Handled {
    pub frames: Vec<session_down::Frame>,
    pub retry: Option<Work>,
}

/// Runs `work` for the account `owner`. A storage or registry failure
/// answers the stanza with `internal-server-error` rather than losing it
/// silently; the router's acknowledgement bookkeeping then moves on.
pub async fn handle(core: &Core, owner: &str, mut work: Work) -> Handled {
    let mut out = Outbox::default();
    let span = match &mut work {
        Work::Frame(session_up::Frame::Stanza(envelope)) => {
            let span = stanza_span!("session.process", envelope);
            traces::hop(&span, &mut envelope.trace_context);
            // What the replica sends in answer continues the stanza's trace.
            out.trace_context.clone_from(&envelope.trace_context);
            span
        }
        _ => Span::none(),
    };
    handle_in_span(core, owner, work, out)
        .instrument(span)
        .await
}

/// [`handle`] inside the stanza's span. Whatever a failed job had produced
/// is dropped: a stanza's sender gets an error instead, and a clean-up
/// tried again makes it anew.
async fn handle_in_span(core: &Core, owner: &str, work: Work, mut out: Outbox) -> Handled {
    let mut retry = None;
    match &work {
        Work::Frame(session_up::Frame::Ended(ended)) => {
            if let Err((error, again)) = presence::session_ended(core, ended, &mut out).await {
                retry = Some(clean_up_failed(error, owner, again, &mut out));
            }
        }
        Work::Replaced(old) => {
            if let Err(error) = presence::gone(core, old, &mut out).await {
                let again = Work::Replaced(old.clone());
                retry = Some(clean_up_failed(error, owner, again, &mut out));
            }
        }
        Work::Frame(session_up::Frame::Stanza(envelope)) => {
            if let Err(error) = stanza(core, envelope, &mut out).await {
                tracing::error!(%error, owner, "stanza handling failed");
                let error = StanzaError::new(StanzaErrorCondition::InternalServerError);
                out.frames = envelope
                    .error_reply(&error, &core.domain)
                    .map(session_down::Frame::Stanza)
                    .into_iter()
                    .collect();
            }
        }
        Work::Bound => {
            // The account's next bind loads it again.
            if let Err(error) = core.load_policy(owner).await {
                tracing::error!(%error, owner, "loading the account's policy failed");
                out.frames.clear();
            }
        }
    }
    Handled {
        frames: out.frames,
        retry,
    }
}

fn clean_up_failed(error: anyhow::Error, owner: &str, again: Work, out: &mut Outbox) -> Work {
    tracing::warn!(%error, owner, "session clean-up failed, to be tried again");
    out.frames.clear();
    again
}

async fn stanza(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    if envelope.kind() == Kind::Presence && envelope.stage() == Stage::FromClient {
        return presence::outbound(core, envelope, out).await;
    }
    if muc::is_for_service(core, envelope) {
        return muc::handle(core, envelope, out).await;
    }
    if to_account(envelope) {
        for module in core.modules.iter() {
            if module.inbound(core, envelope, out).await? == Flow::Done {
                return Ok(());
            }
        }
    }
    match envelope.kind() {
        Kind::Presence => presence::inbound(core, envelope, out).await,
        Kind::Iq => iq::handle(core, envelope, out).await,
        // No module kept it (offline storage is off).
        Kind::Message if envelope.reaches_account_when_resource_gone() => {
            bounce(
                core,
                envelope,
                StanzaErrorCondition::ServiceUnavailable,
                out,
            );
            Ok(())
        }
        Kind::Message | Kind::Unspecified => Ok(()),
    }
}

/// Whether `envelope` is addressed to an account (its own resources'
/// stanzas included): what the modules' inbound hooks see.
fn to_account(envelope: &Envelope) -> bool {
    envelope.to_jid().is_some_and(|to| to.is_account())
}

/// Answers `envelope` with `condition`.
pub fn bounce(core: &Core, envelope: &Envelope, condition: StanzaErrorCondition, out: &mut Outbox) {
    refuse(core, envelope, &StanzaError::new(condition), out);
}

/// Answers `envelope` with `error`.
pub fn refuse(core: &Core, envelope: &Envelope, error: &StanzaError, out: &mut Outbox) {
    if let Some(reply) = envelope.error_reply(error, &core.domain) {
        out.frames.push(session_down::Frame::Stanza(reply));
    }
}
