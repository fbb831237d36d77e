//! XEP-0092 Software Version of the server.

use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use crate::module::{AccountModule, Addressee, Disco, GET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct SoftwareVersion;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(SoftwareVersion))
}

#[async_trait::async_trait]
impl AccountModule for SoftwareVersion {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::VERSION,
            name: "query",
            to: &[Addressee::Server],
            types: GET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::VERSION],
            account: &[],
        }
    }

    async fn iq(&self, _: &Core, _: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        Ok(IqReply::with(
            Element::new("query", ns::VERSION)
                .child(Element::new("name", ns::VERSION).text("xmppd"))
                .child(Element::new("version", ns::VERSION).text(env!("CARGO_PKG_VERSION"))),
        ))
    }
}
