//! The seam every account-side feature plugs into: [`AccountModule`].
//!
//! A module is what the server does for an account beyond the RFC 6121 core
//! (presence and subscriptions, which stay in [`crate::presence`]): the IQs
//! it answers, what it adds to service discovery, hooks on the stanzas the
//! account receives and sends through its replica, its part of the routing
//! policy the router applies without asking the replica, its tables, and its
//! configuration section. The modules a server runs are listed once, in
//! [`crate::modules::all`]; service discovery is generated from them, so it
//! advertises exactly what runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use xmppd_grpc::{AccountPolicy, Envelope};
use xmppd_protocol::IqType;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::xml::Element;
use xmppd_storage::{Schema, Store};

use crate::outbox::Outbox;
use crate::service::Core;

/// Who an IQ is addressed to, as the replica that handles it sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressee {
    /// The server's domain.
    Server,
    /// The sender's own bare JID, or no `to` at all.
    OwnAccount,
    /// Another local account's bare JID (which exists).
    OtherAccount,
}

/// An IQ payload a module answers: the child element's namespace and name,
/// to whom it may be addressed, and in which types. A get or set that no
/// route takes is answered `<service-unavailable/>` for the module.
#[derive(Clone, Copy, Debug)]
pub struct IqRoute {
    pub namespace: &'static str,
    pub name: &'static str,
    pub to: &'static [Addressee],
    pub types: &'static [IqType],
}

/// [`IqRoute::types`] of a payload that is only read.
pub const GET: &[IqType] = &[IqType::Get];
/// [`IqRoute::types`] of a command.
pub const SET: &[IqType] = &[IqType::Set];
/// [`IqRoute::types`] of a payload read and written.
pub const GET_OR_SET: &[IqType] = &[IqType::Get, IqType::Set];

/// A get or set for a module, its one child already parsed.
pub struct Iq<'a> {
    pub envelope: &'a Envelope,
    pub payload: &'a Element,
    pub to: Addressee,
}

impl Iq<'_> {
    pub fn is_get(&self) -> bool {
        self.envelope.iq_type() == Some(IqType::Get)
    }

    /// The sender's bare JID.
    pub fn account(&self) -> &str {
        self.envelope.from_jid().bare().as_str()
    }
}

/// How a module answers an IQ.
pub enum IqReply {
    Result(Option<Element>),
    Error(StanzaError),
}

impl IqReply {
    pub fn with(child: Element) -> IqReply {
        IqReply::Result(Some(child))
    }

    pub fn error(condition: StanzaErrorCondition) -> IqReply {
        IqReply::Error(StanzaError::new(condition))
    }
}

/// What a module adds to XEP-0030 disco#info.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disco {
    /// Features of the server's domain.
    pub server: &'static [&'static str],
    /// Features of every account's bare JID.
    pub account: &'static [&'static str],
}

/// Whether the replica goes on with a stanza after a hook saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The hook dealt with it (answered, stored or dropped it).
    Done,
}

/// An account-side feature. Every method has a default that does nothing,
/// so a module implements only what it adds. Its name (configuration
/// section, logs) is the one it is registered under in
/// [`crate::modules::all`].
#[async_trait::async_trait]
pub trait AccountModule: Send + Sync + 'static {
    /// The IQ payloads it answers; [`AccountModule::iq`] gets only these.
    fn iqs(&self) -> &'static [IqRoute] {
        &[]
    }

    /// Answers a get or set whose payload matches one of
    /// [`AccountModule::iqs`]; pushes and other output go to `out`.
    async fn iq(&self, core: &Core, iq: &Iq<'_>, out: &mut Outbox) -> anyhow::Result<IqReply> {
        let _ = (core, iq, out);
        Ok(IqReply::error(StanzaErrorCondition::ServiceUnavailable))
    }

    fn disco(&self) -> Disco {
        Disco::default()
    }

    /// The XEP-0030 items of `node` of the server's domain, as `<item/>`
    /// elements in the disco#items namespace, as `requester` (a bare JID)
    /// may see them; `None` when the module has no such node.
    async fn node_items(
        &self,
        core: &Core,
        node: &str,
        requester: &str,
    ) -> anyhow::Result<Option<Vec<Element>>> {
        let _ = (core, node, requester);
        Ok(None)
    }

    /// The XEP-0030 info of `node` of the server's domain as `requester` (a
    /// bare JID) may see it: the disco#info `<query/>`, or the error it
    /// gets; `None` when the module has no such node.
    async fn node_info(
        &self,
        core: &Core,
        node: &str,
        requester: &str,
    ) -> anyhow::Result<Option<IqReply>> {
        let _ = (core, node, requester);
        Ok(None)
    }

    /// A stanza addressed to the account has reached its replica: a message
    /// no resource took, presence for the account (subscriptions, probes),
    /// an IQ to its bare JID. Runs in the order of [`crate::modules::all`]
    /// until one returns [`Flow::Done`].
    async fn inbound(
        &self,
        core: &Core,
        envelope: &Envelope,
        out: &mut Outbox,
    ) -> anyhow::Result<Flow> {
        let _ = (core, envelope, out);
        Ok(Flow::Continue)
    }

    /// A resource of the account sent its initial presence (RFC 6121 §4.2).
    async fn available(&self, core: &Core, full_jid: &str, out: &mut Outbox) -> anyhow::Result<()> {
        let _ = (core, full_jid, out);
        Ok(())
    }

    /// Adds the module's rules to the account's routing policy, which the
    /// replica writes into the registry after the account's first bind.
    async fn policy(
        &self,
        core: &Core,
        account: &str,
        policy: &mut AccountPolicy,
    ) -> anyhow::Result<()> {
        let _ = (core, account, policy);
        Ok(())
    }

    /// Its own tables, created and migrated before the replica serves.
    fn schema(&self) -> Option<&'static Schema> {
        None
    }
}

/// Builds a module from its configuration section.
pub type Constructor = fn(&Section) -> anyhow::Result<Box<dyn AccountModule>>;

/// The modules a replica runs, by name, in hook order.
#[derive(Clone)]
pub struct Modules {
    modules: Arc<[(&'static str, Box<dyn AccountModule>)]>,
}

impl Modules {
    /// The enabled ones of `registered`, each given its section of
    /// `configured` (`[modules]`); a section that names no module is an error.
    /// `built` come last in hook order: modules made from more than a
    /// section of their own (the admin commands, which take the
    /// administrators from `[admin]`), always enabled.
    pub fn build(
        registered: &[(&'static str, Constructor)],
        configured: &BTreeMap<String, toml::Table>,
        built: Vec<(&'static str, Box<dyn AccountModule>)>,
    ) -> anyhow::Result<Modules> {
        let names: Vec<&str> = registered.iter().map(|(name, _)| *name).collect();
        if let Some(unknown) = configured
            .keys()
            .find(|name| !names.contains(&name.as_str()))
        {
            anyhow::bail!(
                "[modules.{unknown}]: no such module (the modules are {})",
                names.join(", ")
            );
        }
        let mut modules = Vec::new();
        for (name, constructor) in registered {
            let section = Section {
                table: configured.get(*name).cloned().unwrap_or_default(),
            };
            let enabled = section
                .enabled()
                .map_err(|error| anyhow::anyhow!("[modules.{name}] {error}"))?;
            if enabled {
                let module = constructor(&section)
                    .map_err(|error| anyhow::anyhow!("[modules.{name}] {error}"))?;
                modules.push((*name, module));
            }
        }
        modules.extend(built);
        Ok(Modules {
            modules: modules.into(),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn AccountModule> {
        self.modules.iter().map(|(_, module)| module.as_ref())
    }

    /// The names of the modules that run.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.modules.iter().map(|(name, _)| *name)
    }

    /// The module that answers `payload` sent to `to`, if any.
    pub fn for_iq(
        &self,
        payload: &Element,
        to: Addressee,
        iq_type: IqType,
    ) -> Option<&dyn AccountModule> {
        self.iter().find(|module| {
            module.iqs().iter().any(|route| {
                payload.is(route.name, route.namespace)
                    && route.to.contains(&to)
                    && route.types.contains(&iq_type)
            })
        })
    }

    /// Creates or migrates every module's tables.
    pub async fn migrate(&self, store: &Store) -> anyhow::Result<()> {
        for schema in self.iter().filter_map(AccountModule::schema) {
            store.migrate(schema).await?;
        }
        Ok(())
    }
}

/// A module's configuration section: `enabled` (true unless set false) and
/// the module's own keys, which it reads with [`Section::keys`].
#[derive(Clone, Debug, Default)]
pub struct Section {
    table: toml::Table,
}

impl Section {
    fn enabled(&self) -> anyhow::Result<bool> {
        match self.table.get("enabled") {
            None => Ok(true),
            Some(toml::Value::Boolean(enabled)) => Ok(*enabled),
            Some(other) => anyhow::bail!("enabled must be true or false, not {other:?}"),
        }
    }

    /// The module's keys (all but `enabled`), as its own type, whose serde
    /// defaults and `deny_unknown_fields` say what is allowed.
    pub fn keys<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        let mut table = self.table.clone();
        table.remove("enabled");
        Ok(toml::Value::Table(table).try_into()?)
    }
}
