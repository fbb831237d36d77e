//! IQs the server answers: for itself (disco, version, last activity, time,
//! ping) and for accounts (roster, registration, disco, last activity).
//! Anything else gets `<service-unavailable/>` (RFC 6120 §8.4).

use bytes::Bytes;
use xmppd_grpc::{Envelope, Kick, Kind};
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::ns;
use xmppd_protocol::stanza::Stanza;
use xmppd_protocol::xml::Element;
use xmppd_storage::{Credential, Subscription};

use crate::clock::{format_utc, now_ms};
use crate::handler::bare;
use crate::outbox::Outbox;
use crate::roster;
use crate::service::Core;

/// The features this server truly implements, for disco#info.
const SERVER_FEATURES: &[&str] = &[
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::ROSTER_VER,
    ns::VERSION,
    ns::LAST,
    ns::TIME,
    ns::PING,
    ns::REGISTER,
    ns::OFFLINE,
];

const ACCOUNT_FEATURES: &[&str] = &[ns::DISCO_INFO, ns::DISCO_ITEMS, ns::LAST];

pub enum IqReply {
    Result(Option<Element>),
    Error(StanzaErrorCondition),
}

pub fn result_with(child: Element) -> IqReply {
    IqReply::Result(Some(child))
}

/// Who the IQ is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Addressee {
    Server,
    OwnAccount,
    OtherAccount,
}

pub async fn handle(core: &Core, envelope: &Envelope, out: &mut Outbox) -> anyhow::Result<()> {
    // Results and errors answer our pushes and pings: nothing to do.
    if !matches!(envelope.r#type.as_str(), "get" | "set") {
        return Ok(());
    }
    let reply = match payload_of(envelope) {
        Some(child) => dispatch(core, envelope, &child, out).await?,
        None => IqReply::Error(StanzaErrorCondition::BadRequest),
    };
    answer(core, envelope, reply, out);
    Ok(())
}

/// The one child element a get or set must carry (RFC 6120 §8.2.3).
fn payload_of(envelope: &Envelope) -> Option<Element> {
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
    let user = bare(&envelope.from);
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
    child: &Element,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    use Addressee::*;
    let get = envelope.r#type == "get";
    let to = addressee(core, envelope);
    // RFC 6121 §8.5.1: no account, no answer on its behalf.
    if to == OtherAccount && !core.store.account_exists(bare(&envelope.to)).await? {
        return Ok(IqReply::Error(StanzaErrorCondition::ServiceUnavailable));
    }
    let reply = match (child.namespace(), child.name(), to) {
        (ns::ROSTER, "query", OwnAccount) => roster::handle(core, envelope, child, out).await?,
        (ns::DISCO_INFO, "query", Server) if get => {
            result_with(disco_info("server", "im", SERVER_FEATURES, child))
        }
        (ns::DISCO_INFO, "query", _) if get => {
            result_with(disco_info("account", "registered", ACCOUNT_FEATURES, child))
        }
        (ns::DISCO_ITEMS, "query", _) if get => result_with(Element::new("query", ns::DISCO_ITEMS)),
        (ns::VERSION, "query", Server) if get => result_with(version()),
        (ns::TIME, "time", Server) if get => result_with(time()),
        (ns::PING, "ping", Server | OwnAccount) if get => IqReply::Result(None),
        (ns::LAST, "query", Server) if get => {
            result_with(last(core.started.elapsed().as_secs(), ""))
        }
        (ns::LAST, "query", OwnAccount | OtherAccount) if get => {
            last_activity(core, envelope).await?
        }
        (ns::REGISTER, "query", Server | OwnAccount) => {
            register(core, envelope, child, out).await?
        }
        _ => IqReply::Error(StanzaErrorCondition::ServiceUnavailable),
    };
    Ok(reply)
}

fn answer(core: &Core, envelope: &Envelope, reply: IqReply, out: &mut Outbox) {
    match reply {
        IqReply::Result(child) => {
            let from = if envelope.to.is_empty() {
                bare(&envelope.from)
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
        IqReply::Error(condition) => {
            if let Some(reply) = envelope.error_reply(&StanzaError::new(condition), &core.domain) {
                out.frames
                    .push(xmppd_grpc::session_down::Frame::Stanza(reply));
            }
        }
    }
}

/// XEP-0030 info; a query for a node we do not have gets no features.
fn disco_info(category: &str, kind: &str, features: &[&str], query: &Element) -> Element {
    let mut info = Element::new("query", ns::DISCO_INFO);
    if let Some(node) = query.get_attr("node") {
        info.set_attr("node", Some(node.to_string()));
        return info;
    }
    info.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", category)
            .attr("type", kind),
    );
    for feature in features {
        info.push_child(Element::new("feature", ns::DISCO_INFO).attr("var", *feature));
    }
    info
}

/// XEP-0092.
fn version() -> Element {
    Element::new("query", ns::VERSION)
        .child(Element::new("name", ns::VERSION).text("xmppd"))
        .child(Element::new("version", ns::VERSION).text(env!("CARGO_PKG_VERSION")))
}

/// XEP-0202, always in UTC.
fn time() -> Element {
    Element::new("time", ns::TIME)
        .child(Element::new("tzo", ns::TIME).text("+00:00"))
        .child(Element::new("utc", ns::TIME).text(format_utc(now_ms())))
}

fn last(seconds: u64, status: &str) -> Element {
    Element::new("query", ns::LAST)
        .attr("seconds", seconds.to_string())
        .text(status)
}

/// XEP-0012 §4: seconds since the account's last resource went away,
/// for the account itself and contacts that see its presence.
async fn last_activity(core: &Core, envelope: &Envelope) -> anyhow::Result<IqReply> {
    let requester = bare(&envelope.from);
    let account = if envelope.to.is_empty() {
        requester
    } else {
        bare(&envelope.to)
    };
    if account != requester {
        let item = core.store.roster_item(account, requester).await?;
        let allowed = item.is_some_and(|item| {
            matches!(item.subscription, Subscription::From | Subscription::Both)
        });
        if !allowed {
            return Ok(IqReply::Error(StanzaErrorCondition::Forbidden));
        }
    }
    let online = core
        .registry
        .resources(account)
        .await?
        .iter()
        .any(|r| r.available);
    if online {
        return Ok(result_with(last(0, "")));
    }
    Ok(match core.store.last_activity(account).await? {
        Some(activity) => {
            let seconds = (now_ms() - activity.at_ms).max(0) / 1000;
            result_with(last(seconds as u64, &activity.status))
        }
        None => IqReply::Error(StanzaErrorCondition::ItemNotFound),
    })
}

/// XEP-0077 for a logged-in account: its registration, a password
/// change, or removal of the account.
async fn register(
    core: &Core,
    envelope: &Envelope,
    query: &Element,
    out: &mut Outbox,
) -> anyhow::Result<IqReply> {
    let user = bare(&envelope.from);
    let username = user.split_once('@').map_or(user, |(node, _)| node);
    if envelope.r#type == "get" {
        return Ok(result_with(
            Element::new("query", ns::REGISTER)
                .child(Element::new("registered", ns::REGISTER))
                .child(Element::new("username", ns::REGISTER).text(username))
                .child(Element::new("password", ns::REGISTER)),
        ));
    }
    if query.get_child("remove", ns::REGISTER).is_some() {
        return remove_account(core, user, out).await;
    }
    let given_username = query
        .get_child("username", ns::REGISTER)
        .map(Element::text_content);
    let password = query
        .get_child("password", ns::REGISTER)
        .map(Element::text_content);
    match (given_username, password) {
        (Some(given), Some(password)) if given == username && !password.is_empty() => {
            let credentials = derive_credentials(&password, core.settings.scram_iterations).await?;
            core.store.set_credentials(user, &credentials).await?;
            tracing::info!(account = user, "password changed");
            Ok(IqReply::Result(None))
        }
        (Some(given), Some(_)) if given != username => {
            Ok(IqReply::Error(StanzaErrorCondition::NotAuthorized))
        }
        _ => Ok(IqReply::Error(StanzaErrorCondition::BadRequest)),
    }
}

async fn remove_account(core: &Core, user: &str, out: &mut Outbox) -> anyhow::Result<IqReply> {
    core.store.delete_account(user).await?;
    tracing::info!(account = user, "account removed");
    // XEP-0077 §3.2: the account's streams end.
    for resource in core.registry.resources(user).await? {
        out.kick(Kick {
            node_id: resource.node_id,
            full_jid: resource.full_jid,
            conn_id: resource.conn_id,
            condition: "not-authorized".into(),
            text: "account removed".into(),
        });
    }
    Ok(IqReply::Result(None))
}

/// SCRAM keys for every stored hash; PBKDF2 is slow on purpose, so it runs
/// off the async workers.
pub async fn derive_credentials(
    password: &str,
    iterations: u32,
) -> anyhow::Result<Vec<Credential>> {
    let password = password.to_string();
    let keys =
        tokio::task::spawn_blocking(move || xmppd_sasl::new_credentials(&password, iterations))
            .await??;
    Ok(keys.into_iter().map(Credential::from).collect())
}
