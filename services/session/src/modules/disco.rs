//! XEP-0030 Service Discovery, generated from the modules that run: the
//! server and every account advertise exactly what is implemented.

use xmppd_protocol::error::StanzaErrorCondition;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;

use crate::module::{AccountModule, Addressee, Disco, GET, Iq, IqReply, IqRoute, Section};
use crate::outbox::Outbox;
use crate::service::Core;

const EVERYONE: &[Addressee] = &[
    Addressee::Server,
    Addressee::OwnAccount,
    Addressee::OtherAccount,
];

pub struct ServiceDiscovery;

pub fn module(_: &Section) -> anyhow::Result<Box<dyn AccountModule>> {
    Ok(Box::new(ServiceDiscovery))
}

#[async_trait::async_trait]
impl AccountModule for ServiceDiscovery {
    fn iqs(&self) -> &'static [IqRoute] {
        &[
            IqRoute {
                namespace: ns::DISCO_INFO,
                name: "query",
                to: EVERYONE,
                types: GET,
            },
            IqRoute {
                namespace: ns::DISCO_ITEMS,
                name: "query",
                to: EVERYONE,
                types: GET,
            },
        ]
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::DISCO_INFO, ns::DISCO_ITEMS],
            account: &[ns::DISCO_INFO, ns::DISCO_ITEMS],
        }
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        if let Some(node) = iq.payload.get_attr("node") {
            return of_node(core, iq, node).await;
        }
        if iq.payload.is("query", ns::DISCO_ITEMS) {
            return Ok(IqReply::with(items(core, iq.to)));
        }
        Ok(IqReply::with(info(core, iq.to)))
    }
}

/// disco#items and disco#info of a node of the server that a module
/// serves (the ad-hoc commands' list and each command). Accounts have no
/// nodes: a node the entity does not serve is an item-not-found (XEP-0030
/// §3.1, §4.1).
async fn of_node(core: &Core, iq: &Iq<'_>, node: &str) -> anyhow::Result<IqReply> {
    if iq.to != Addressee::Server {
        return Ok(IqReply::error(StanzaErrorCondition::ItemNotFound));
    }
    let requester = iq.account();
    for module in core.modules.iter() {
        if iq.payload.is("query", ns::DISCO_INFO) {
            if let Some(reply) = module.node_info(core, node, requester).await? {
                return Ok(reply);
            }
        } else if let Some(items) = module.node_items(core, node, requester).await? {
            let mut query = Element::new("query", ns::DISCO_ITEMS).attr("node", node);
            for item in items {
                query.push_child(item);
            }
            return Ok(IqReply::with(query));
        }
    }
    Ok(IqReply::error(StanzaErrorCondition::ItemNotFound))
}

/// disco#items: the server lists its chat services (XEP-0045 §6.1);
/// accounts have no items.
fn items(core: &Core, to: Addressee) -> Element {
    let mut items = Element::new("query", ns::DISCO_ITEMS);
    if to == Addressee::Server {
        for domain in &core.settings().muc.domains {
            items.push_child(Element::new("item", ns::DISCO_ITEMS).attr("jid", domain.as_str()));
        }
    }
    items
}

/// disco#info of the server or of an account: its identity and the
/// features of every module, sorted and without repeats.
fn info(core: &Core, to: Addressee) -> Element {
    let (category, kind) = match to {
        Addressee::Server => ("server", "im"),
        Addressee::OwnAccount | Addressee::OtherAccount => ("account", "registered"),
    };
    let mut features: Vec<&str> = core
        .modules
        .iter()
        .flat_map(|module| {
            let disco = module.disco();
            match to {
                Addressee::Server => disco.server,
                _ => disco.account,
            }
        })
        .copied()
        .collect();
    features.sort_unstable();
    features.dedup();
    let mut info = Element::new("query", ns::DISCO_INFO).child(
        Element::new("identity", ns::DISCO_INFO)
            .attr("category", category)
            .attr("type", kind),
    );
    for feature in features {
        info.push_child(Element::new("feature", ns::DISCO_INFO).attr("var", feature));
    }
    info
}
