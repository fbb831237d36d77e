//! XEP-0050 ad-hoc commands with XEP-0133's service administration set,
//! so that administrators can work from an XMPP client (Gajim, Psi): an
//! account module (`AccountModule`) answering `<command/>` IQs to the
//! server's domain. Its commands do what the HTTP API's routes do, with
//! the same functions, and are recorded in the same audit log. Anyone
//! without the admin role gets `<forbidden/>`.
//!
//! Each command is two steps: executing it answers a form; submitting the
//! form runs it. The form carries everything, so the server keeps no state
//! between the steps (the `sessionid` is only echoed), and a client may
//! submit the form with its first request. A command that needs no input
//! runs at once.

use serde_json::json;
use xmppd_grpc::BoundResource;
use xmppd_protocol::error::{StanzaError, StanzaErrorCondition};
use xmppd_protocol::jid::Jid;
use xmppd_protocol::ns;
use xmppd_protocol::xml::Element;
use xmppd_session::module::{AccountModule, Addressee, Disco, Iq, IqReply, IqRoute, SET};
use xmppd_session::outbox::Outbox;
use xmppd_session::service::Core;
use xmppd_storage::StoreError;

use crate::announce::{self, Message};
use crate::error::ApiError;
use crate::sessions::{self, KICK_CONDITION, KICK_TEXT};
use crate::{MAX_LIMIT, accounts, auth, local_account};

/// The module, for the administrators the configuration names (granted ones
/// are read from the store).
pub fn module(admins: Vec<String>) -> Box<dyn AccountModule> {
    Box::new(AdminCommands { admins })
}

pub struct AdminCommands {
    admins: Vec<String>,
}

/// One XEP-0133 command: its node (after `…/admin#`), its name, and the
/// fields of its form.
struct Command {
    node: &'static str,
    name: &'static str,
    fields: &'static [Field],
}

struct Field {
    var: &'static str,
    kind: &'static str,
    label: &'static str,
    required: bool,
}

const fn field(var: &'static str, kind: &'static str, label: &'static str) -> Field {
    Field {
        var,
        kind,
        label,
        required: true,
    }
}

const fn optional(var: &'static str, kind: &'static str, label: &'static str) -> Field {
    Field {
        var,
        kind,
        label,
        required: false,
    }
}

const COMMANDS: &[Command] = &[
    Command {
        node: "add-user",
        name: "Add a user",
        fields: &[
            field("accountjid", "jid-single", "The JID of the account to add"),
            field("password", "text-private", "The password"),
            optional("password-verify", "text-private", "The password again"),
        ],
    },
    Command {
        node: "delete-user",
        name: "Delete users",
        fields: &[field(
            "accountjids",
            "jid-multi",
            "The JIDs of the accounts to delete",
        )],
    },
    Command {
        node: "change-user-password",
        name: "Change a user's password",
        fields: &[
            field("accountjid", "jid-single", "The JID of the account"),
            field("password", "text-private", "The new password"),
        ],
    },
    Command {
        node: "end-user-session",
        name: "End user sessions",
        fields: &[field(
            "accountjids",
            "jid-multi",
            "Full JIDs (one session) or bare JIDs (all of the account's)",
        )],
    },
    Command {
        node: "get-online-users-num",
        name: "Number of online sessions",
        fields: &[],
    },
    Command {
        node: "get-online-users-list",
        name: "Online users",
        fields: &[optional(
            "max_items",
            "text-single",
            "At most this many (the default is 100)",
        )],
    },
    Command {
        node: "announce",
        name: "Send an announcement to online users",
        fields: &[
            optional("subject", "text-single", "Subject"),
            field("announcement", "text-multi", "Announcement"),
        ],
    },
];

const ROUTES: &[IqRoute] = &[IqRoute {
    namespace: ns::COMMANDS,
    name: "command",
    to: &[Addressee::Server],
    types: SET,
}];

/// Online users listed when a request names no `max_items`.
const DEFAULT_ONLINE_USERS: usize = 100;

#[async_trait::async_trait]
impl AccountModule for AdminCommands {
    fn iqs(&self) -> &'static [IqRoute] {
        ROUTES
    }

    fn disco(&self) -> Disco {
        Disco {
            server: &[ns::COMMANDS],
            account: &[],
        }
    }

    /// The admin tables: the roles it checks, the audit log it writes.
    fn schema(&self) -> Option<&'static xmppd_storage::Schema> {
        Some(&crate::store::SCHEMA)
    }

    async fn node_items(
        &self,
        core: &Core,
        node: &str,
        requester: &str,
    ) -> anyhow::Result<Option<Vec<Element>>> {
        if node != ns::COMMANDS {
            return Ok(None);
        }
        // Commands one may not run are not listed (XEP-0050 §2.2).
        if !auth::is_admin(core, &self.admins, requester).await? {
            return Ok(Some(Vec::new()));
        }
        let items = COMMANDS.iter().map(|command| {
            Element::new("item", ns::DISCO_ITEMS)
                .attr("jid", core.domain.clone())
                .attr("node", node_of(command))
                .attr("name", command.name)
        });
        Ok(Some(items.collect()))
    }

    /// A command's identity and features (XEP-0050 §2.3), for those who may
    /// run it; anyone else is forbidden.
    async fn node_info(
        &self,
        core: &Core,
        node: &str,
        requester: &str,
    ) -> anyhow::Result<Option<IqReply>> {
        let Some(command) = command_at(node) else {
            return Ok(None);
        };
        if !auth::is_admin(core, &self.admins, requester).await? {
            return Ok(Some(IqReply::error(StanzaErrorCondition::Forbidden)));
        }
        let info = Element::new("query", ns::DISCO_INFO)
            .attr("node", node)
            .child(
                Element::new("identity", ns::DISCO_INFO)
                    .attr("category", "automation")
                    .attr("type", "command-node")
                    .attr("name", command.name),
            )
            .child(Element::new("feature", ns::DISCO_INFO).attr("var", ns::COMMANDS))
            .child(Element::new("feature", ns::DISCO_INFO).attr("var", ns::DATA_FORMS));
        Ok(Some(IqReply::with(info)))
    }

    async fn iq(&self, core: &Core, iq: &Iq<'_>, _: &mut Outbox) -> anyhow::Result<IqReply> {
        let request = iq.payload;
        let node = request.get_attr("node").unwrap_or_default();
        let Some(command) = command_at(node) else {
            return Ok(IqReply::error(StanzaErrorCondition::ItemNotFound));
        };
        let admin = iq.account();
        if !auth::is_admin(core, &self.admins, admin).await? {
            return Ok(IqReply::error(StanzaErrorCondition::Forbidden));
        }
        let session = request
            .get_attr("sessionid")
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        let reply = Element::new("command", ns::COMMANDS)
            .attr("node", node)
            .attr("sessionid", session);
        let submitted = request
            .get_child("x", ns::DATA_FORMS)
            .filter(|form| form.get_attr("type") == Some("submit"));
        match (request.get_attr("action").unwrap_or("execute"), submitted) {
            ("cancel", _) => Ok(IqReply::with(reply.attr("status", "canceled"))),
            (_, Some(form)) => Ok(run(core, admin, command, form, reply).await),
            (_, None) if command.fields.is_empty() => {
                let empty = Element::new("x", ns::DATA_FORMS);
                Ok(run(core, admin, command, &empty, reply).await)
            }
            (_, None) => Ok(IqReply::with(ask(command, reply))),
        }
    }
}

fn node_of(command: &Command) -> String {
    format!("{}#{}", ns::ADMIN, command.node)
}

/// The command whose node is `node`.
fn command_at(node: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|command| node_of(command) == node)
}

/// The first step: the command's form.
fn ask(command: &Command, reply: Element) -> Element {
    let actions = Element::new("actions", ns::COMMANDS)
        .attr("execute", "complete")
        .child(Element::new("complete", ns::COMMANDS));
    let mut form = Element::new("x", ns::DATA_FORMS)
        .attr("type", "form")
        .child(Element::new("title", ns::DATA_FORMS).text(command.name))
        .child(form_type());
    for field in command.fields {
        let mut element = Element::new("field", ns::DATA_FORMS)
            .attr("var", field.var)
            .attr("type", field.kind)
            .attr("label", field.label);
        if field.required {
            element.push_child(Element::new("required", ns::DATA_FORMS));
        }
        form.push_child(element);
    }
    reply.attr("status", "executing").child(actions).child(form)
}

fn form_type() -> Element {
    Element::new("field", ns::DATA_FORMS)
        .attr("var", "FORM_TYPE")
        .attr("type", "hidden")
        .child(Element::new("value", ns::DATA_FORMS).text(ns::ADMIN))
}

/// The second step: runs the command with the submitted form; the answer
/// is the completed command with a note, or an error.
async fn run(
    core: &Core,
    admin: &str,
    command: &Command,
    form: &Element,
    reply: Element,
) -> IqReply {
    for field in command.fields.iter().filter(|field| field.required) {
        if values(form, field.var).iter().all(String::is_empty) {
            return IqReply::Error(
                StanzaError::new(StanzaErrorCondition::BadRequest)
                    .with_text(format!("{} is required", field.var)),
            );
        }
    }
    match execute(core, admin, command, form).await {
        Ok((note, result)) => {
            let mut reply = reply.attr("status", "completed").child(
                Element::new("note", ns::COMMANDS)
                    .attr("type", "info")
                    .text(note),
            );
            if let Some(result) = result {
                reply.push_child(result);
            }
            IqReply::with(reply)
        }
        Err(error) => IqReply::Error(stanza_error(&error)),
    }
}

/// What a command did (a note for people) and a result form, if it has one.
type Done = (String, Option<Element>);

async fn execute(
    core: &Core,
    admin: &str,
    command: &Command,
    form: &Element,
) -> Result<Done, ApiError> {
    let one = |var| values(form, var).into_iter().next().unwrap_or_default();
    match command.node {
        "add-user" => {
            let jid = local_account(core, &one("accountjid"))?;
            let password = one("password");
            let verify = values(form, "password-verify");
            if verify.first().is_some_and(|again| *again != password) {
                return Err(ApiError::bad_request(
                    "bad_password",
                    "the passwords differ",
                ));
            }
            let credentials = accounts::credentials(core, password).await?;
            match core.store.create_account(jid.as_str(), &credentials).await {
                Ok(()) => {}
                Err(StoreError::AlreadyExists) => {
                    return Err(ApiError::new(
                        axum::http::StatusCode::CONFLICT,
                        "account_exists",
                        format!("{jid} exists already"),
                    ));
                }
                Err(error) => return Err(error.into()),
            }
            auth::audit(core, admin, "account.create", jid.as_str(), json!({})).await?;
            Ok((format!("{jid} added"), None))
        }
        "delete-user" => {
            let jids = accounts_of(core, &values(form, "accountjids"))?;
            for jid in &jids {
                let ended = accounts::remove(core, jid.as_str()).await?;
                let detail = json!({"ended": ended.ended});
                auth::audit(core, admin, "account.delete", jid.as_str(), detail).await?;
            }
            Ok((format!("{} deleted", joined(&jids)), None))
        }
        "change-user-password" => {
            let jid = local_account(core, &one("accountjid"))?;
            let credentials = accounts::credentials(core, one("password")).await?;
            match core
                .store
                .set_credentials(jid.as_str(), &credentials, None)
                .await
            {
                Ok(()) => {}
                Err(StoreError::NotFound) => return Err(accounts::unknown_account(jid.as_str())),
                Err(error) => return Err(error.into()),
            }
            auth::audit(core, admin, "account.password", jid.as_str(), json!({})).await?;
            Ok((format!("password of {jid} changed"), None))
        }
        "end-user-session" => {
            let mut ended = Vec::new();
            for jid in values(form, "accountjids") {
                let resources = bound(core, &jid).await?;
                let done = sessions::end(core, &resources, KICK_CONDITION, KICK_TEXT).await?;
                auth::audit(
                    core,
                    admin,
                    "session.end",
                    &jid,
                    json!({"ended": done.ended}),
                )
                .await?;
                ended.extend(done.ended);
            }
            Ok((format!("{} session(s) ended", ended.len()), None))
        }
        "get-online-users-num" => {
            let count = core.registry.count_sessions().await?;
            let result = result_form(vec![result_field(
                "onlineusersnum",
                "text-single",
                vec![count.to_string()],
            )]);
            Ok((format!("{count} session(s) online"), Some(result)))
        }
        "get-online-users-list" => {
            let max = match one("max_items") {
                max if max.is_empty() => DEFAULT_ONLINE_USERS,
                max => max
                    .parse::<usize>()
                    .ok()
                    .filter(|max| (1..=MAX_LIMIT as usize).contains(max))
                    .ok_or_else(|| {
                        ApiError::bad_request("bad_limit", format!("max_items is 1 to {MAX_LIMIT}"))
                    })?,
            };
            let users = online_users(core, max).await?;
            let note = format!("{} user(s) online", users.len());
            let field = result_field("onlineuserjids", "jid-multi", users);
            Ok((note, Some(result_form(vec![field]))))
        }
        "announce" => {
            let body = values(form, "announcement").join("\n");
            let message = Message::new(core, &one("subject"), &body);
            let recipients = announce::to_online(core, &message).await?;
            let detail = json!({"subject": one("subject"), "body": body, "recipients": recipients});
            auth::audit(core, admin, "announce", "online", detail).await?;
            Ok((format!("sent to {recipients} resource(s)"), None))
        }
        _ => Err(ApiError::not_found("not_found", "no such command")),
    }
}

/// The values of a submitted form's field (several for `-multi` fields).
fn values(form: &Element, var: &str) -> Vec<String> {
    form.children()
        .find(|field| field.is("field", ns::DATA_FORMS) && field.get_attr("var") == Some(var))
        .map(|field| {
            field
                .children()
                .filter(|value| value.is("value", ns::DATA_FORMS))
                .map(Element::text_content)
                .collect()
        })
        .unwrap_or_default()
}

fn accounts_of(core: &Core, jids: &[String]) -> Result<Vec<Jid>, ApiError> {
    jids.iter().map(|jid| local_account(core, jid)).collect()
}

fn joined(jids: &[Jid]) -> String {
    jids.iter().map(Jid::as_str).collect::<Vec<_>>().join(", ")
}

/// The sessions a JID names: the one of a full JID, all of a bare one's.
async fn bound(core: &Core, jid: &str) -> Result<Vec<BoundResource>, ApiError> {
    let parsed = Jid::parse(jid)
        .map_err(|error| ApiError::bad_request("malformed_jid", format!("{jid:?}: {error}")))?;
    if parsed.resource().is_none() {
        let account = local_account(core, jid)?;
        return Ok(core.registry.resources(account.as_str()).await?);
    }
    match core.registry.session(parsed.as_str()).await? {
        Some(resource) => Ok(vec![resource]),
        None => Err(ApiError::not_found(
            "unknown_session",
            format!("{parsed} is not bound"),
        )),
    }
}

/// The bare JIDs of up to `max` accounts with an available resource.
async fn online_users(core: &Core, max: usize) -> Result<Vec<String>, ApiError> {
    let mut users: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = core.registry.resources_page(&cursor, max).await?;
        for resource in page.resources.iter().filter(|r| r.available) {
            let bare = resource.jid().bare().as_str().to_string();
            if users.last() != Some(&bare) && users.len() < max {
                users.push(bare);
            }
        }
        match page.next {
            Some(next) if users.len() < max => cursor = next,
            _ => return Ok(users),
        }
    }
}

fn result_form(fields: Vec<Element>) -> Element {
    let mut form = Element::new("x", ns::DATA_FORMS)
        .attr("type", "result")
        .child(form_type());
    for field in fields {
        form.push_child(field);
    }
    form
}

fn result_field(var: &str, kind: &str, values: Vec<String>) -> Element {
    let mut field = Element::new("field", ns::DATA_FORMS)
        .attr("var", var)
        .attr("type", kind);
    for value in values {
        field.push_child(Element::new("value", ns::DATA_FORMS).text(value));
    }
    field
}

/// The stanza error of an API error (XEP-0050 §4.6: bad-request for bad
/// input), with its message as text.
fn stanza_error(error: &ApiError) -> StanzaError {
    let condition = match error.status.as_u16() {
        400 => StanzaErrorCondition::BadRequest,
        404 => StanzaErrorCondition::ItemNotFound,
        409 => StanzaErrorCondition::Conflict,
        _ => StanzaErrorCondition::InternalServerError,
    };
    StanzaError::new(condition).with_text(error.message.clone())
}
