//! XEP-0012 Last Activity: the server's uptime, and how long an account has
//! been away, for itself and for contacts that see its presence.

use xmppd_protocol::JidRef;
use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_storage::Subscription;

use crate::clock::now_ms;
use crate::module::{AccountModule, Addressee, Disco, GET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

pub struct LastActivity;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(LastActivity))
}

#[async_trait::async_trait]
impl AccountModule for LastActivity {
    fn iqs(&self) -> &'static [IqRoute] {
        &[IqRoute {
            namespace: ns::LAST,
            name: "query",
            to: &[
                Addressee::Server,
                Addressee::OwnAccount,
                Addressee::OtherAccount,
            ],
            types: GET,
        }]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::LAST],
            account: &[ns::LAST],
        }
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        if iq.to == Addressee::Server {
            return Ok(IqReply::with(last(core.started.elapsed().as_secs(), "")));
        }
        account_activity(core, iq).await
    }
}

fn last(seconds: u64, status: &str) -> Element {
    Element::new("query", ns::LAST)
        .attr("seconds", seconds.to_string())
        .text(status)
}

/// XEP-0012 §4: seconds since the account's last resource went away.
async fn account_activity(core: &Core, iq: &Iq<'_>) -> anyhow::Result<IqReply> {
    let requester = iq.account();
    let account = match iq.to {
        Addressee::OwnAccount => requester,
        _ => JidRef::new(&iq.envelope.to).bare().as_str(),
    };
    if account != requester {
        let item = core.store.roster_item(account, requester).await?;
        let allowed = item.is_some_and(|item| {
            matches!(item.subscription, Subscription::From | Subscription::Both)
        });
        if !allowed {
            return Ok(IqReply::error(StanzaErrorCondition::Forbidden));
        }
    }
    let online = core
        .registry
        .resources(account)
        .await?
        .iter()
        .any(|r| r.available);
    if online {
        return Ok(IqReply::with(last(0, "")));
    }
    Ok(match core.store.last_activity(account).await? {
        Some(activity) => {
            let seconds = (now_ms() - activity.at_ms).max(0) / 1000;
            IqReply::with(last(seconds as u64, &activity.status))
        }
        None => IqReply::error(StanzaErrorCondition::ItemNotFound),
    })
}
