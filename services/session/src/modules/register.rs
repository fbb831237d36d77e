//! XEP-0077 In-Band Registration for a logged-in account: its registration,
//! a password change, or removal of the account. (Creating an account
//! happens before authentication, at the connection-manager.)

use xmppd_grpc::Kick;
use xmppd_protocol::JidRef;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_storage::Credential;

use crate::module::{AccountModule, Addressee, Disco, GET_OR_SET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct InBandRegistration;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(InBandRegistration))
}

#[async_trait::async_trait]
impl AccountModule for InBandRegistration {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::REGISTER,
            name: "query",
            to: &[Addressee::Server, Addressee::OwnAccount],
            types: GET_OR_SET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::REGISTER],
            account: &[],
        }
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
        let user = iq.account();
        let username = JidRef::new(user).node().unwrap_or(user);
        if iq.is_get() {
            return Ok(IqReply::with(
                Element::new("query", ns::REGISTER)
                    .child(Element::new("registered", ns::REGISTER))
                    .child(Element::new("username", ns::REGISTER).text(username))
                    .child(Element::new("password", ns::REGISTER)),
            ));
        }
        let query = iq.payload;
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
                let credentials =
                    derive_credentials(&password, core.settings().scram_iterations).await?;
                core.store.set_credentials(user, &credentials).await?;
                tracing::info!(account = user, "password changed");
                Ok(IqReply::Result(None))
            }
            (Some(given), Some(_)) if given != username => {
                Ok(IqReply::error(StanzaErrorCondition::NotAuthorized))
            }
            _ => Ok(IqReply::error(StanzaErrorCondition::BadRequest)),
        }
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
