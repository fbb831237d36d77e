//! XEP-0199 XMPP Ping, to the server or to the client's own account.

use xmppd_protocol::ns;

use crate::module::{AccountModule, Addressee, Disco, GET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct Ping;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(Ping))
}

#[async_trait::async_trait]
impl AccountModule for Ping {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::PING,
            name: "ping",
            to: &[Addressee::Server, Addressee::OwnAccount],
            types: GET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::PING],
            account: &[],
        }
    }

    async fn iq(&self, _: &Core, _: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        Ok(IqReply::Result(None))
    }
}
