//! XEP-0202 Entity Time of the server, always in UTC.

use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use crate::clock::{format_utc, now_ms};
use crate::module::{AccountModule, Addressee, Disco, GET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct EntityTime;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(EntityTime))
}

#[async_trait::async_trait]
impl AccountModule for EntityTime {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::TIME,
            name: "time",
            to: &[Addressee::Server],
            types: GET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::TIME],
            account: &[],
        }
    }

    async fn iq(&self, _: &Core, _: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        Ok(IqReply::with(
            Element::new("time", ns::TIME)
                .child(Element::new("tzo", ns::TIME).text("+00:00"))
                .child(Element::new("utc", ns::TIME).text(format_utc(now_ms()))),
        ))
    }
}
