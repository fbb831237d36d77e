//! XEP-0280 Message Carbons: each resource turns copies on or off for
//! itself. The copies are made by the router (`services/router/src/policy.rs`),
//! which reads the resource's flag with the account's resources.

use xmppd_grpc::ResourceFlags;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;

use crate::module::{AccountModule, Addressee, Disco, Iq, IqReply, IqRoute, SET, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct MessageCarbons;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(MessageCarbons))
}

#[async_trait::async_trait]
impl AccountModule for MessageCarbons {
    fn iqs(&self) -> &'static [IqRoute] {
        const OWN: &[Addressee] = &[Addressee::OwnAccount];
        &[
            IqRoute {
                namespace: ns::CARBONS,
                name: "enable",
                to: OWN,
                types: SET,
            },
            IqRoute {
                namespace: ns::CARBONS,
                name: "disable",
                to: OWN,
                types: SET,
            },
        ]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::CARBONS],
            account: &[],
        }
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        let enable = iq.payload.name() == "enable";
        let full = &iq.envelope.from;
        let Some(session) = core.registry.session(full).await? else {
            // The stream ended while its request was on its way.
            return Ok(IqReply::error(StanzaErrorCondition::ItemNotFound));
        };
        let flags = ResourceFlags {
            carbons: enable,
            ..session.flags.unwrap_or_default()
        };
        if !core
            .registry
            .set_flags(full, session.conn_id, flags)
            .await?
        {
            return Ok(IqReply::error(StanzaErrorCondition::ItemNotFound));
        }
        Ok(IqReply::Result(None))
    }
}
