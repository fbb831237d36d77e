//! XEP-0077 in-band registration before authentication, and a bound
//! client's password change (§3.3). The SCRAM keys are derived here at the
//! edge, so no password ever crosses the cluster: a password change is
//! answered here, never routed. The rest of a bound client's registration
//! IQs (its form, removing the account) go to its session replica.

use std::net::IpAddr;

use bytes::Bytes;
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

/// The `<username/>` and `<password/>` of a XEP-0077 query, each if given;
/// `<bad-request/>` when the stanza holds no such query.
fn username_and_password(
    stanza: &Stanza,
) -> Result<(Option<String>, Option<String>), StanzaErrorCondition> {
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
    Ok((field("username"), field("password")))
}

async fn register(edge: &Edge, stanza: &Stanza, ip: IpAddr) -> Result<(), StanzaErrorCondition> {
    let (Some(username), Some(password)) = username_and_password(stanza)? else {
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
    // Every attempt that gets this far counts, taken or not: guessing which
    // names exist (conflict) or making the edge derive keys costs the same
    // allowance as creating accounts.
    edge.registrations_by_ip.record(ip);
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
            tracing::info!(%jid, "account registered in band");
            Ok(())
        }
        RegisterOutcome::Conflict => Err(StanzaErrorCondition::Conflict),
        RegisterOutcome::NotAllowed | RegisterOutcome::Unspecified => {
            Err(StanzaErrorCondition::NotAllowed)
        }
    }
}

/// Whether a bound client's stanza changes its account's password: an IQ
/// set to the server or the account itself with a `<password/>` in its
/// registration query, and no `<remove/>`. Cheap tests first: only such
/// IQs are parsed. `to` is the normalised `to`, empty when absent.
pub fn is_password_change(stanza: &Stanza, to: &str, account: &Jid, domain: &str) -> bool {
    stanza.name() == "iq"
        && stanza.stanza_type() == Some("set")
        && (to.is_empty() || to == domain || to == account.bare().as_str())
        && stanza.element().is_ok_and(|iq| {
            iq.get_child("query", ns::REGISTER).is_some_and(|query| {
                query.get_child("password", ns::REGISTER).is_some()
                    && query.get_child("remove", ns::REGISTER).is_none()
            })
        })
}

/// Answers a password change ([`is_password_change`]) of `account`: the
/// new keys go to the account's session replica, the password nowhere.
pub async fn change_password(edge: &Edge, account: &Jid, stanza: &Stanza) -> Bytes {
    match set_password(edge, account, stanza).await {
        Ok(()) => iq_result(stanza, None).into(),
        Err(condition) => error_reply(
            stanza,
            &StanzaError::new(condition),
            &edge.settings().domain,
        ),
    }
}

async fn set_password(
    edge: &Edge,
    account: &Jid,
    stanza: &Stanza,
) -> Result<(), StanzaErrorCondition> {
    if !edge.settings().password_change {
        // As for any IQ no module serves.
        return Err(StanzaErrorCondition::ServiceUnavailable);
    }
    let (Some(username), Some(password)) = username_and_password(stanza)? else {
        return Err(StanzaErrorCondition::BadRequest);
    };
    let bare = account.bare();
    if Jid::new(Some(&username), &edge.settings().domain, None).ok() != Some(bare.clone()) {
        return Err(StanzaErrorCondition::NotAuthorized);
    }
    if password.is_empty() {
        return Err(StanzaErrorCondition::BadRequest);
    }
    let credentials = derive(password, edge.settings().scram_iterations).await?;
    let changed = edge
        .cluster
        .set_credentials(bare.as_str(), credentials, None)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "password change failed");
            StanzaErrorCondition::InternalServerError
        })?;
    if !changed {
        // Removed meanwhile, from another of its streams.
        return Err(StanzaErrorCondition::ItemNotFound);
    }
    tracing::info!(account = %bare, "password changed");
    Ok(())
}

/// SCRAM keys for every stored hash, computed off the async workers.
pub(crate) async fn derive(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_change(xml: &'static str, to: &str) -> bool {
        let stanza = Stanza::from_bytes(Bytes::from_static(xml.as_bytes()), ns::CLIENT).unwrap();
        let account = Jid::parse("alice@localhost/phone").unwrap();
        is_password_change(&stanza, to, &account, "localhost")
    }

    const CHANGE: &str = "<iq type='set' id='c'><query xmlns='jabber:iq:register'>\
        <username>alice</username><password>new</password></query></iq>";

    /// Every IQ that would carry a new password to the account's replica is
    /// answered at the edge instead; nothing else is.
    #[test]
    fn password_changes_are_recognised_wherever_the_account_sends_them() {
        for to in ["", "localhost", "alice@localhost"] {
            assert!(is_change(CHANGE, to), "to '{to}'");
        }
        // Without a username, still a password change (refused at the edge).
        assert!(is_change(
            "<iq type='set' id='c'><query xmlns='jabber:iq:register'><password>x</password></query></iq>",
            "",
        ));
        // To a contact: that is the client's business, not a credential.
        assert!(!is_change(CHANGE, "bob@localhost"));
        assert!(!is_change(
            "<iq type='get' id='c'><query xmlns='jabber:iq:register'/></iq>",
            ""
        ));
        assert!(!is_change(
            "<iq type='set' id='c'><query xmlns='jabber:iq:register'><remove/></query></iq>",
            ""
        ));
        assert!(!is_change(
            "<iq type='set' id='c'><query xmlns='jabber:iq:roster'><password>x</password></query></iq>",
            ""
        ));
        assert!(!is_change(
            "<message to='localhost'><query xmlns='jabber:iq:register'><password>x</password></query></message>",
            ""
        ));
    }
}
