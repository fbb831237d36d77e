//! XEP-0077 In-Band Registration for a logged-in account: its registration
//! and the removal of the account. Creating an account (before
//! authentication) and changing a password happen at the connection-manager,
//! which turns the password into SCRAM keys there, so that no password
//! crosses the cluster.

use xmppd_grpc::Kick;
use xmppd_protocol::JidRef;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

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
        // A password change with a password in it never gets here: the edge answers it.
        Ok(IqReply::error(StanzaErrorCondition::BadRequest))
    }
}

async fn remove_account(core: &Core, user: &str, out: &mut Outbox) -> anyhow::Result<IqReply> {
    crate::shared_groups::delete_account(core, user, out).await?;
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
