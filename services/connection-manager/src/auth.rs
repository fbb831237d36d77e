//! SASL authentication (RFC 6120 §6): SCRAM-SHA-1/256 and their -PLUS
//! variants with channel binding, and PLAIN (only inside TLS unless the
//! configuration relaxes it).
//!
//! Failed attempts are counted per client IP, per account and IP, and per
//! account. Past the first two limits, attempts from that address (for any
//! account, or for that account) are refused with `<temporary-auth-failure/>`
//! until the window passes. Past the per-account limit nothing is refused,
//! since anyone who knows a JID could then lock its owner out from wherever
//! they connect; instead every answer for that account, the right password's
//! too, comes after a delay that doubles with each further failure, which
//! slows guessing from many addresses to a crawl.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::time::Instant;
use xmppd_grpc::Credential;
use xmppd_protocol::error::StreamErrorCondition;
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;
use xmppd_protocol::stream::StreamEvent;
use xmppd_sasl::{ChannelBinding, Mechanism, SaslError, ScramHash, ScramKeys, ScramServer};

use crate::edge::{Edge, EdgeSettings};
use crate::limits::failure_delay;
use crate::stream::{ClientStream, StreamEnd};

pub enum Outcome {
    Authenticated(Jid),
    /// A `<failure/>` was sent; the client may try again.
    Failed,
}

/// Why an attempt failed, as the `<failure/>` child names it.
enum Refusal {
    Sasl(SaslError),
    /// Throttled, or the cluster could not be asked.
    TemporaryAuthFailure,
}

impl Refusal {
    fn condition(&self) -> &'static str {
        match self {
            Refusal::Sasl(error) => error.condition(),
            Refusal::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl From<SaslError> for Refusal {
    fn from(error: SaslError) -> Self {
        Refusal::Sasl(error)
    }
}

/// The mechanisms offered on a stream, strongest first.
pub fn offered(settings: &EdgeSettings, tls: bool, channel_binding: bool) -> Vec<Mechanism> {
    Mechanism::ALL
        .into_iter()
        .filter(|mechanism| match mechanism {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus => channel_binding,
            Mechanism::ScramSha256 | Mechanism::ScramSha1 => true,
            Mechanism::Plain => settings.allow_plain && (tls || !settings.require_tls),
        })
        .collect()
}

/// Runs one SASL exchange started by `auth`.
pub async fn authenticate(
    edge: &Edge,
    stream: &mut impl ClientStream,
    auth: &Stanza,
    ip: IpAddr,
    offered: &[Mechanism],
    bindings: Vec<ChannelBinding>,
    deadline: Instant,
) -> Result<Outcome, StreamEnd> {
    let started = std::time::Instant::now();
    let result = exchange(edge, stream, auth, ip, offered, bindings, deadline).await?;
    edge.metrics
        .login
        .sasl
        .observe(started.elapsed().as_secs_f64());
    let account = match &result {
        Ok((jid, _)) => Some(jid.to_string()),
        Err((_, account)) => account.clone(),
    };
    if let Some(account) = &account {
        let settings = edge.settings();
        let excess = edge.auth_failures_by_account.excess(account);
        let delay = failure_delay(excess, settings.failure_delay, settings.max_failure_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    match result {
        Ok((jid, additional)) => {
            // RFC 6120 §6.4.6: SCRAM's server-final travels in <success/>.
            let success = if additional.is_empty() {
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".to_string()
            } else {
                format!(
                    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
                    BASE64.encode(additional)
                )
            };
            stream.write(success.as_bytes()).await?;
            edge.metrics.authentication("success");
            tracing::debug!(%jid, "authenticated");
            Ok(Outcome::Authenticated(jid))
        }
        Err((refusal, account)) => {
            if matches!(refusal, Refusal::Sasl(SaslError::NotAuthorized)) {
                edge.auth_failures_by_ip.record(ip);
                if let Some(account) = account {
                    edge.auth_failures_by_account_ip
                        .record((account.clone(), ip));
                    edge.auth_failures_by_account.record(account);
                }
            }
            edge.metrics.authentication(refusal.condition());
            // RFC 5802 §7: a SCRAM server-error travels as the failure's text.
            let text = match &refusal {
                Refusal::Sasl(error) => error
                    .scram_server_error()
                    .map(|error| format!("<text xml:lang='en'>e={error}</text>"))
                    .unwrap_or_default(),
                Refusal::TemporaryAuthFailure => String::new(),
            };
            let failure = format!(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{}/>{text}</failure>",
                refusal.condition()
            );
            stream.write(failure.as_bytes()).await?;
            Ok(Outcome::Failed)
        }
    }
}

/// The account and the additional data of `<success/>`, or a refusal with
/// the account it was for when known (for throttling).
type Attempt = Result<(Jid, Vec<u8>), (Refusal, Option<String>)>;

async fn exchange(
    edge: &Edge,
    stream: &mut impl ClientStream,
    auth: &Stanza,
    ip: IpAddr,
    offered: &[Mechanism],
    bindings: Vec<ChannelBinding>,
    deadline: Instant,
) -> Result<Attempt, StreamEnd> {
    let Ok(element) = auth.element() else {
        return Ok(Err((SaslError::MalformedRequest.into(), None)));
    };
    let mechanism = element
        .get_attr("mechanism")
        .and_then(Mechanism::from_name)
        .filter(|mechanism| offered.contains(mechanism));
    let Some(mechanism) = mechanism else {
        return Ok(Err((SaslError::InvalidMechanism.into(), None)));
    };
    if edge.auth_failures_by_ip.exhausted(&ip) {
        return Ok(Err((Refusal::TemporaryAuthFailure, None)));
    }
    let initial = match decode(&element.text_content()) {
        Ok(initial) => initial,
        Err(error) => return Ok(Err((error.into(), None))),
    };
    match mechanism.scram_hash() {
        Some(hash) => {
            scram(
                edge, stream, ip, mechanism, hash, initial, bindings, deadline,
            )
            .await
        }
        None => Ok(plain(edge, ip, initial.unwrap_or_default()).await),
    }
}

/// SASL payloads are base64; a lone `=` is an empty one and no text at all
/// means none was sent (RFC 6120 §6.4.2).
fn decode(text: &str) -> Result<Option<Vec<u8>>, SaslError> {
    match text.trim() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        text => BASE64
            .decode(text)
            .map(Some)
            .map_err(|_| SaslError::IncorrectEncoding),
    }
}

/// The account a SASL username names, checked against the authzid.
fn account(
    edge: &Edge,
    ip: IpAddr,
    username: &str,
    authzid: Option<&str>,
) -> Result<Jid, (Refusal, Option<String>)> {
    let jid = Jid::new(Some(username), &edge.domain, None)
        .map_err(|_| (Refusal::Sasl(SaslError::NotAuthorized), None))?;
    if let Some(authzid) = authzid.filter(|authzid| !authzid.is_empty())
        && Jid::parse(authzid).ok().as_ref() != Some(&jid)
    {
        return Err((SaslError::InvalidAuthzid.into(), Some(jid.to_string())));
    }
    // Only this address is refused for the account: its owner, elsewhere,
    // still gets in.
    if edge
        .auth_failures_by_account_ip
        .exhausted(&(jid.to_string(), ip))
    {
        return Err((Refusal::TemporaryAuthFailure, Some(jid.to_string())));
    }
    Ok(jid)
}

async fn credentials(edge: &Edge, jid: &Jid) -> Result<Vec<Credential>, (Refusal, Option<String>)> {
    edge.cluster
        .credentials(jid.as_str())
        .await
        .map_err(|error| {
            tracing::warn!(%error, "credential look-up failed");
            (Refusal::TemporaryAuthFailure, None)
        })
}

#[allow(clippy::too_many_arguments)]
async fn scram(
    edge: &Edge,
    stream: &mut impl ClientStream,
    ip: IpAddr,
    mechanism: Mechanism,
    hash: ScramHash,
    initial: Option<Vec<u8>>,
    bindings: Vec<ChannelBinding>,
    deadline: Instant,
) -> Result<Attempt, StreamEnd> {
    // A client that says "y" (it supports channel binding but thinks we do
    // not) is accepted even though -PLUS was offered: clients that only know
    // tls-unique, which TLS 1.3 lacks, honestly say "y" after their -PLUS
    // attempt fails (slixmpp does). XEP-0440 tells clients which types we
    // have; the downgrade check would only lock those clients out.
    let mut server = ScramServer::new(mechanism, bindings, false);
    let client_first = match initial {
        Some(initial) => initial,
        None => {
            stream
                .write(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</challenge>")
                .await?;
            match read_response(stream, deadline).await? {
                Ok(response) => response,
                Err(refusal) => return Ok(Err((refusal, None))),
            }
        }
    };
    let first = match server.client_first(&client_first) {
        Ok(first) => first,
        Err(error) => return Ok(Err((error.into(), None))),
    };
    let jid = match account(edge, ip, &first.username, first.authzid.as_deref()) {
        Ok(jid) => jid,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let keys = match credentials(edge, &jid).await {
        Ok(credentials) => Credential::keys_for(hash, &credentials),
        Err(refusal) => return Ok(Err(refusal)),
    };
    let server_first = server.server_first(keys, edge.decoys(&edge.settings()));
    let challenge = format!(
        "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
        BASE64.encode(server_first)
    );
    stream.write(challenge.as_bytes()).await?;
    let client_final = match read_response(stream, deadline).await? {
        Ok(response) => response,
        Err(refusal) => return Ok(Err((refusal, Some(jid.to_string())))),
    };
    match server.client_final(&client_final) {
        Ok(server_final) => Ok(Ok((jid, server_final))),
        Err(error) => Ok(Err((error.into(), Some(jid.to_string())))),
    }
}

/// The client's next `<response/>`; `<abort/>` or anything else ends the
/// exchange.
async fn read_response(
    stream: &mut impl ClientStream,
    deadline: Instant,
) -> Result<Result<Vec<u8>, Refusal>, StreamEnd> {
    let event = match tokio::time::timeout_at(deadline, stream.next_event()).await {
        Ok(event) => event?,
        Err(_) => {
            return Err(stream
                .fail_with(
                    StreamErrorCondition::ConnectionTimeout,
                    "negotiation took too long",
                )
                .await);
        }
    };
    let StreamEvent::Stanza(stanza) = event else {
        return Err(stream
            .fail_with(StreamErrorCondition::BadFormat, "expected a SASL response")
            .await);
    };
    match (stanza.namespace(), stanza.name()) {
        (ns::SASL, "response") => {
            let text = stanza
                .element()
                .map(|e| e.text_content())
                .unwrap_or_default();
            Ok(decode(&text)
                .map(Option::unwrap_or_default)
                .map_err(Refusal::Sasl))
        }
        (ns::SASL, "abort") => Ok(Err(Refusal::Sasl(SaslError::Aborted))),
        _ => Err(stream
            .fail_with(
                StreamErrorCondition::NotAuthorized,
                "SASL exchange interrupted",
            )
            .await),
    }
}

/// PLAIN, checked against the stored SCRAM keys (RFC 4616).
async fn plain(edge: &Edge, ip: IpAddr, message: Vec<u8>) -> Attempt {
    let plain = xmppd_sasl::parse_plain(&message).map_err(|error| (error.into(), None))?;
    let jid = account(edge, ip, &plain.username, plain.authzid.as_deref())?;
    let credentials = credentials(edge, &jid).await?;
    let keys = Credential::keys_for(ScramHash::Sha256, &credentials)
        .or_else(|| Credential::keys_for(ScramHash::Sha1, &credentials));
    let not_authorized = || {
        (
            Refusal::Sasl(SaslError::NotAuthorized),
            Some(jid.to_string()),
        )
    };
    let Some(keys) = keys else {
        return Err(not_authorized());
    };
    // PBKDF2 is slow on purpose: keep it off the async workers.
    let password = plain.password;
    let checked = keys.stored_key.clone();
    let iterations = edge.settings().scram_iterations;
    let verified = tokio::task::spawn_blocking(move || {
        xmppd_sasl::verify_password(&keys, &password).then(|| {
            needs_upgrade(&credentials, iterations)
                .then(|| xmppd_sasl::new_credentials(&password, iterations).ok())
                .flatten()
        })
    })
    .await
    .unwrap_or(None);
    let Some(upgrade) = verified else {
        return Err(not_authorized());
    };
    if let Some(stronger) = upgrade {
        upgrade_credentials(edge, &jid, stronger, checked).await;
    }
    Ok((jid, Vec::new()))
}

/// Whether an account's stored keys are weaker than new keys would be: fewer
/// iterations than configured, or a hash missing. Only a login that sends
/// the password (PLAIN) can replace them: SCRAM never shows it to the server.
fn needs_upgrade(credentials: &[Credential], iterations: u32) -> bool {
    let hashes = [ScramHash::Sha1, ScramHash::Sha256];
    credentials.len() != hashes.len()
        || hashes.into_iter().any(|hash| {
            Credential::keys_for(hash, credentials).is_none_or(|keys| keys.iterations < iterations)
        })
}

/// Stores `stronger` keys for the password a login just proved, unless the
/// keys it checked (`checked`) were replaced meanwhile. The login succeeds
/// whatever becomes of this.
async fn upgrade_credentials(edge: &Edge, jid: &Jid, stronger: Vec<ScramKeys>, checked: Vec<u8>) {
    let credentials = stronger.into_iter().map(Credential::from).collect();
    match edge
        .cluster
        .set_credentials(jid.as_str(), credentials, Some(checked))
        .await
    {
        Ok(true) => tracing::info!(%jid, "stored keys upgraded at login"),
        Ok(false) => tracing::debug!(%jid, "stored keys changed meanwhile, not upgraded"),
        Err(error) => tracing::warn!(%jid, %error, "stored keys not upgraded"),
    }
}
