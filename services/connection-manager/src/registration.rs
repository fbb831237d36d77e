//! XEP-0077 in-band registration before authentication. The SCRAM keys are
//! derived here at the edge, so no password ever crosses the cluster.

use std::net::IpAddr;

use xmppd_grpc::{Credential, RegisterOutcome};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::{Stanza, error_reply};
use xmppd_protocol::xml::Element;

use crate::edge::Edge;
use crate::negotiation::iq_result;
use crate::stream::{ClientStream, StreamEnd};

const FORM: &str = "<query xmlns='jabber:iq:register'>\
    <instructions>Choose a username and password.</instructions>\
    <username/><password/></query>";

/// Whether `stanza` is an IQ about registration (cheap check first).
pub fn is_registration(stanza: &Stanza) -> bool {
    stanza
        .element()
        .is_ok_and(|iq| iq.get_child("query", ns::REGISTER).is_some())
}

pub async fn handle(
    edge: &Edge,
    stream: &mut impl ClientStream,
    stanza: &Stanza,
    ip: IpAddr,
) -> Result<(), StreamEnd> {
    let answer = match stanza.stanza_type() {
        // Switched off by configuration: refused, and the stream goes on.
        _ if !edge.settings().registration => Err(StanzaErrorCondition::NotAllowed),
        Some("get") => Ok(Some(FORM)),
        Some("set") => register(edge, stanza, ip).await.map(|()| None),
        _ => Err(StanzaErrorCondition::BadRequest),
    };
    let reply = match answer {
        Ok(payload) => iq_result(stanza, payload),
        Err(condition) => error_reply(stanza, &StanzaError::new(condition), &edge.domain).to_vec(),
    };
    stream.write(&reply).await
}

async fn register(edge: &Edge, stanza: &Stanza, ip: IpAddr) -> Result<(), StanzaErrorCondition> {
    let iq = stanza
        .element()
        .map_err(|_| StanzaErrorCondition::BadRequest)?;
    let query = iq
        .get_child("query", ns::REGISTER)
        .ok_or(StanzaErrorCondition::BadRequest)?;
    let field = |name: &str| {
        query
            .get_child(name, ns::REGISTER)
            .map(Element::text_content)
    };
    let (Some(username), Some(password)) = (field("username"), field("password")) else {
        return Err(StanzaErrorCondition::NotAcceptable);
    };
    if password.is_empty() {
        return Err(StanzaErrorCondition::NotAcceptable);
    }
    let jid = Jid::new(Some(&username), &edge.domain, None)
        .map_err(|_| StanzaErrorCondition::JidMalformed)?;
    if edge.registrations_by_ip.exhausted(&ip) {
        return Err(StanzaErrorCondition::ResourceConstraint);
    }
    let credentials = derive(password, edge.settings().scram_iterations).await?;
    let outcome = edge
        .cluster
        .register(jid.as_str(), credentials)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "registration failed");
            StanzaErrorCondition::InternalServerError
        })?;
    match outcome {
        RegisterOutcome::Created => {
            edge.registrations_by_ip.record(ip);
            tracing::info!(%jid, "account registered in band");
            Ok(())
        }
        RegisterOutcome::Conflict => Err(StanzaErrorCondition::Conflict),
        RegisterOutcome::NotAllowed | RegisterOutcome::Unspecified => {
            Err(StanzaErrorCondition::NotAllowed)
        }
    }
}

/// SCRAM keys for every stored hash, computed off the async workers.
async fn derive(
    password: String,
    iterations: u32,
) -> Result<Vec<Credential>, StanzaErrorCondition> {
    let keys =
        tokio::task::spawn_blocking(move || xmppd_sasl::new_credentials(&password, iterations))
            .await
            .map_err(|_| StanzaErrorCondition::InternalServerError)?
            .map_err(|_| StanzaErrorCondition::NotAcceptable)?;
    Ok(keys.into_iter().map(Credential::from).collect())
}
