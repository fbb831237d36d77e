//! `xmppd api`: every operation of the HTTP admin API (`docs/admin.md`)
//! from the command line, against a running server or cluster, with the
//! results as tables.
//!
//! Where the API is comes from `--url` or `XMPPD_ADMIN_URL` (by default
//! `admin.listen` of the configuration); the token from
//! `XMPPD_ADMIN_TOKEN` or a token file, which `xmppd api login` writes
//! after asking the password without echo. Nothing secret is ever taken
//! from the command line, where other users of the machine could read it.
//! The certificate to trust is `--ca`, or else the server's own
//! (`tls.cert_file`, or the one generated under `server.data_dir`).

mod client;
mod table;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use xmppd_runtime::Config;

use crate::admin;
use client::{ApiClient, encode};
use table::{Table, print_fields};

/// Items asked for per page when a list is paged through.
const PAGE: u32 = 500;

#[derive(Args)]
pub struct ApiArgs {
    /// The admin API's URL (`https://host:port`); by default the address
    /// `admin.listen` names.
    #[arg(long, env = "XMPPD_ADMIN_URL")]
    url: Option<String>,
    /// PEM certificates to trust for the API's TLS; by default the server's
    /// own certificate (`tls.cert_file`, or the one generated under
    /// `server.data_dir`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The file holding the token, which `login` writes; by default
    /// `$XDG_CONFIG_HOME/xmppd/admin-token` (`~/.config/xmppd/admin-token`).
    /// A token in XMPPD_ADMIN_TOKEN comes first.
    #[arg(long, env = "XMPPD_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: ApiCommand,
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Log in as an administrator and keep the login token in the token
    /// file. The password is asked for on the terminal (without echo), or
    /// read from XMPPD_PASSWORD, or from the first line of standard input
    /// when that is not a terminal.
    Login { jid: String },
    #[command(flatten)]
    Authorized(AuthorizedCommand),
}

/// The commands that carry a token.
#[derive(Subcommand)]
enum AuthorizedCommand {
    /// Revoke the token in use, and remove the token file it came from.
    Logout,
    /// Accounts of the server's domain.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Bound sessions of the whole cluster.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Send a message from the server's domain.
    Announce {
        /// `online` (every available resource), `all` (every account,
        /// offline ones when they come online), or one account's bare JID.
        #[arg(long, default_value = "online")]
        to: String,
        #[arg(long, default_value = "")]
        subject: String,
        body: String,
    },
    /// Live nodes by role, sessions, and stanzas delivered per second.
    Cluster,
    /// Group chat rooms of every chat service.
    #[command(subcommand)]
    Rooms(RoomsCommand),
    /// Shared roster groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// API tokens for automation.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// The audit log, newest first.
    Audit {
        /// Entries to show (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// List the accounts, by JID.
    List {
        /// Only JIDs containing this, case-insensitively.
        #[arg(long, default_value = "")]
        search: String,
    },
    /// An account and its sessions.
    Show { jid: String },
    /// Create an account; the password is read as `login` reads it, twice
    /// on a terminal.
    Add { jid: String },
    /// Delete an account and everything stored for it; its sessions end.
    Remove { jid: String },
    /// Set a new password, read as `add` reads it.
    Passwd { jid: String },
    /// End every session of the account.
    Kick { jid: String },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// List the sessions.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
    },
    /// End one session (a full JID).
    Kick { jid: String },
}

#[derive(Subcommand)]
enum RoomsCommand {
    /// List the rooms, by JID.
    List,
    /// A room, its subject and its occupants.
    Show { jid: String },
    /// Destroy a room: every occupant is told, with the reason and the
    /// alternate venue.
    Destroy {
        jid: String,
        #[arg(long)]
        reason: Option<String>,
        /// A room to go to instead.
        #[arg(long)]
        alternate: Option<String>,
    },
}

#[derive(Subcommand)]
enum GroupsCommand {
    /// List the groups, by name.
    List,
    /// A group and how many members it has.
    Show { name: String },
    /// Create a group.
    Add {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// Change a group's description.
    Describe { name: String, description: String },
    /// Delete a group.
    Remove { name: String },
    /// List a group's members, by JID.
    Members { name: String },
    /// Add an account to a group.
    AddMember { name: String, jid: String },
    /// Take an account out of a group.
    RemoveMember { name: String, jid: String },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// List the API tokens (never their secrets).
    List,
    /// Make an API token; its secret is shown once.
    Create {
        name: String,
        /// Lifetime in seconds; none: until revoked.
        #[arg(long)]
        ttl_secs: Option<u64>,
    },
    /// Revoke an API token by its id.
    Revoke { id: String },
}

/// Runs `xmppd api ...`.
pub async fn run(config: &Config, args: ApiArgs) -> anyhow::Result<()> {
    let url = match &args.url {
        Some(url) => url.clone(),
        None => configured_url(config)?,
    };
    let mut client = ApiClient::new(&url, || trust(config, args.ca.as_deref()))?;
    let token_file = match &args.token_file {
        Some(path) => Some(path.clone()),
        None => default_token_file(),
    };
    let command = match args.command {
        ApiCommand::Login { jid } => return login(&client, &jid, token_file.as_deref()).await,
        ApiCommand::Authorized(command) => command,
    };
    let (token, from_file) = token(token_file.as_deref())?;
    client.set_token(token);
    let api = &client;
    match command {
        AuthorizedCommand::Logout => {
            api.post("/auth/logout", json!({})).await?;
            if let Some(file) = from_file {
                std::fs::remove_file(&file)
                    .with_context(|| format!("cannot remove {}", file.display()))?;
            }
            println!("logged out");
        }
        AuthorizedCommand::Accounts(command) => accounts(api, command).await?,
        AuthorizedCommand::Sessions(command) => sessions(api, command).await?,
        AuthorizedCommand::Announce { to, subject, body } => {
            let request = json!({"to": to, "subject": subject, "body": body});
            let sent = api.post("/announcements", request).await?;
            println!("sent to {} recipients", sent["recipients"]);
        }
        AuthorizedCommand::Cluster => cluster(api).await?,
        AuthorizedCommand::Rooms(command) => rooms(api, command).await?,
        AuthorizedCommand::Groups(command) => groups(api, command).await?,
        AuthorizedCommand::Tokens(command) => tokens(api, command).await?,
        AuthorizedCommand::Audit { limit } => {
            let page = api.get(&format!("/audit?limit={limit}")).await?;
            let mut table = Table::new(&[
                ("ID", "id"),
                ("AT", "at"),
                ("ACTOR", "actor"),
                ("ACTION", "action"),
                ("TARGET", "target"),
                ("DETAIL", "detail"),
            ]);
            table.print(items(&page));
        }
    }
    Ok(())
}

/// `https://<admin.listen>`, on loopback when it listens on every address.
fn configured_url(config: &Config) -> anyhow::Result<String> {
    let listen = &config.admin.listen;
    if listen.is_empty() {
        bail!(
            "admin.listen is empty (the API is off here): name the API with --url or XMPPD_ADMIN_URL"
        );
    }
    let mut address: SocketAddr = listen
        .parse()
        .with_context(|| format!("admin.listen {listen:?} is not an address"))?;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let scheme = if config.admin.tls { "https" } else { "http" };
    Ok(format!("{scheme}://{address}"))
}

/// A TLS configuration trusting the certificates in `ca`, or else the
/// server's own certificate (and the chain in its file).
fn trust(config: &Config, ca: Option<&Path>) -> anyhow::Result<Arc<ClientConfig>> {
    let path = match ca {
        Some(ca) => ca.to_owned(),
        None => xmppd_tls::certs::certificate_file(
            &config.server.domain,
            config.tls.cert_file.as_deref(),
            &config.server.data_dir,
        ),
    };
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the certificate to trust, {} (name one with --ca)",
            path.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("{} is not PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate of {} is unusable", path.display()))?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `$XDG_CONFIG_HOME/xmppd/admin-token`, or `~/.config/xmppd/admin-token`.
fn default_token_file() -> Option<PathBuf> {
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".config")))?;
    Some(config_home.join("xmppd").join("admin-token"))
}

/// The token requests carry, and the file it came from (none for
/// `XMPPD_ADMIN_TOKEN`).
fn token(file: Option<&Path>) -> anyhow::Result<(String, Option<PathBuf>)> {
    if let Ok(token) = std::env::var("XMPPD_ADMIN_TOKEN") {
        return Ok((token, None));
    }
    let no_token = "no token: log in with `xmppd api login <jid>`, or set XMPPD_ADMIN_TOKEN";
    let Some(file) = file else {
        bail!("{no_token}, or name a token file with --token-file");
    };
    match std::fs::read_to_string(file) {
        Ok(token) => Ok((token.trim().to_string(), Some(file.to_owned()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("{no_token} ({} does not exist)", file.display())
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// `xmppd api login`: a login token, written to `file`, readable by its
/// owner only.
async fn login(client: &ApiClient, jid: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let Some(file) = file else {
        bail!("no token file to keep the token in: name one with --token-file");
    };
    let password = admin::password(false)?;
    let answer = client
        .post("/auth/login", json!({"jid": jid, "password": password}))
        .await?;
    let token = answer["token"]
        .as_str()
        .context("the login answered no token")?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    admin::write_private(file, token)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "logged in as {jid} until {}; the token is in {}",
        table::cell(&answer["expires_at"]),
        file.display()
    );
    Ok(())
}

async fn accounts(api: &ApiClient, command: AccountsCommand) -> anyhow::Result<()> {
    let account = |jid: &str| format!("/accounts/{}", encode(jid));
    match command {
        AccountsCommand::List { search } => {
            let mut table = Table::new(&[("JID", "jid"), ("CREATED AT", "created_at")]);
            let path = format!("/accounts?search={}", encode(&search));
            each_page(api, &path, "after", |page| table.print(page)).await?;
        }
        AccountsCommand::Show { jid } => {
            let shown = api.get(&account(&jid)).await?;
            print_fields(&shown, &[("JID", "jid")]);
            println!();
            session_table().print(shown["sessions"].as_array().map_or(&[], Vec::as_slice));
        }
        AccountsCommand::Add { jid } => {
            let password = admin::password(true)?;
            let request = json!({"jid": jid, "password": password});
            let made = api.post("/accounts", request).await?;
            println!("created {}", table::cell(&made["jid"]));
        }
        AccountsCommand::Remove { jid } => {
            let ended = api.delete(&account(&jid), None).await?;
            println!("removed {jid}");
            print_ended(&ended);
        }
        AccountsCommand::Passwd { jid } => {
            let password = admin::password(true)?;
            let path = format!("{}/password", account(&jid));
            api.put(&path, json!({"password": password})).await?;
            println!("password of {jid} changed");
        }
        AccountsCommand::Kick { jid } => {
            let path = format!("{}/sessions", account(&jid));
            print_ended(&api.delete(&path, None).await?);
        }
    }
    Ok(())
}

async fn sessions(api: &ApiClient, command: SessionsCommand) -> anyhow::Result<()> {
    match command {
        SessionsCommand::List { account: None } => {
            let mut table = session_table();
            each_page(api, "/sessions", "cursor", |page| table.print(page)).await?;
        }
        SessionsCommand::List {
            account: Some(account),
        } => {
            let page = api
                .get(&format!("/sessions?account={}", encode(&account)))
                .await?;
            session_table().print(items(&page));
        }
        SessionsCommand::Kick { jid } => {
            let path = format!("/sessions/{}", encode(&jid));
            print_ended(&api.delete(&path, None).await?);
        }
    }
    Ok(())
}

fn session_table() -> Table {
    Table::new(&[
        ("JID", "jid"),
        ("NODE", "node"),
        ("TRANSPORT", "transport"),
        ("ADDRESS", "address"),
        ("LOGIN AT", "login_at"),
        ("AVAILABLE", "available"),
        ("PRIORITY", "priority"),
    ])
}

fn print_ended(ended: &Value) {
    let ended = ended["ended"].as_array().map_or(&[][..], Vec::as_slice);
    if ended.is_empty() {
        println!("no session ended");
    }
    for jid in ended {
        println!("ended {}", table::cell(jid));
    }
}

async fn cluster(api: &ApiClient) -> anyhow::Result<()> {
    let status = api.get("/cluster").await?;
    print_fields(
        &status,
        &[
            ("SESSIONS", "sessions"),
            ("STANZAS/S", "stanzas_per_second"),
        ],
    );
    println!();
    let mut table = Table::new(&[
        ("ROLE", "role"),
        ("ID", "id"),
        ("GRPC ADDRESS", "grpc_address"),
        ("STANZAS/S", "stanzas_per_second"),
    ]);
    let mut nodes = Vec::new();
    for (role, key) in [
        ("connection-manager", "connection_managers"),
        ("router", "routers"),
        ("session", "session_replicas"),
    ] {
        for node in items_of(&status[key]) {
            let mut node = node.clone();
            node["role"] = json!(role);
            nodes.push(node);
        }
    }
    table.print(&nodes);
    Ok(())
}

async fn rooms(api: &ApiClient, command: RoomsCommand) -> anyhow::Result<()> {
    let room = |jid: &str| format!("/rooms/{}", encode(jid));
    let settings = [
        ("NAME", "name"),
        ("PERSISTENT", "persistent"),
        ("PUBLIC", "public"),
        ("MEMBERS ONLY", "members_only"),
        ("PASSWORD", "password_protected"),
        ("MODERATED", "moderated"),
    ];
    match command {
        RoomsCommand::List => {
            let mut columns = vec![("JID", "jid"), ("OCCUPANTS", "occupants")];
            columns.extend(settings);
            let mut table = Table::new(&columns);
            each_page(api, "/rooms", "after", |page| table.print(page)).await?;
        }
        RoomsCommand::Show { jid } => {
            let shown = api.get(&room(&jid)).await?;
            let mut fields = vec![("JID", "jid")];
            fields.extend(settings);
            fields.push(("SUBJECT", "subject"));
            print_fields(&shown, &fields);
            println!();
            let mut table = Table::new(&[
                ("NICK", "nick"),
                ("JID", "jid"),
                ("ROLE", "role"),
                ("AFFILIATION", "affiliation"),
            ]);
            table.print(items_of(&shown["occupants"]));
        }
        RoomsCommand::Destroy {
            jid,
            reason,
            alternate,
        } => {
            let mut body = json!({});
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            if let Some(alternate) = alternate {
                body["alternate"] = json!(alternate);
            }
            api.delete(&room(&jid), Some(body)).await?;
            println!("destroyed {jid}");
        }
    }
    Ok(())
}

async fn groups(api: &ApiClient, command: GroupsCommand) -> anyhow::Result<()> {
    let group = |name: &str| format!("/groups/{}", encode(name));
    let columns = [
        ("NAME", "name"),
        ("MEMBERS", "members"),
        ("DESCRIPTION", "description"),
    ];
    match command {
        GroupsCommand::List => {
            let mut table = Table::new(&columns);
            each_page(api, "/groups", "after", |page| table.print(page)).await?;
        }
        GroupsCommand::Show { name } => print_fields(&api.get(&group(&name)).await?, &columns),
        GroupsCommand::Add { name, description } => {
            let mut body = json!({"name": name});
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            api.post("/groups", body).await?;
            println!("created group {name}");
        }
        GroupsCommand::Describe { name, description } => {
            let body = json!({"description": description});
            print_fields(&api.put(&group(&name), body).await?, &columns);
        }
        GroupsCommand::Remove { name } => {
            api.delete(&group(&name), None).await?;
            println!("removed group {name}");
        }
        GroupsCommand::Members { name } => {
            let mut table = Table::new(&[("JID", "jid")]);
            let path = format!("{}/members", group(&name));
            each_page(api, &path, "after", |page| table.print(page)).await?;
        }
        GroupsCommand::AddMember { name, jid } => {
            let path = format!("{}/members/{}", group(&name), encode(&jid));
            api.request(http::Method::PUT, &path, None).await?;
            println!("{jid} is a member of {name}");
        }
        GroupsCommand::RemoveMember { name, jid } => {
            let path = format!("{}/members/{}", group(&name), encode(&jid));
            api.delete(&path, None).await?;
            println!("{jid} is no longer a member of {name}");
        }
    }
    Ok(())
}

async fn tokens(api: &ApiClient, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::List => {
            let mut table = Table::new(&[
                ("ID", "id"),
                ("NAME", "name"),
                ("HOLDER", "jid"),
                ("CREATED AT", "created_at"),
                ("EXPIRES AT", "expires_at"),
            ]);
            each_page(api, "/tokens", "after", |page| table.print(page)).await?;
        }
        TokensCommand::Create { name, ttl_secs } => {
            let mut body = json!({"name": name});
            if let Some(ttl_secs) = ttl_secs {
                body["ttl_secs"] = json!(ttl_secs);
            }
            let made = api.post("/tokens", body).await?;
            print_fields(
                &made,
                &[
                    ("ID", "id"),
                    ("EXPIRES AT", "expires_at"),
                    ("TOKEN", "token"),
                ],
            );
            eprintln!("the token is shown this once: keep it where only its users can read it");
        }
        TokensCommand::Revoke { id } => {
            api.delete(&format!("/tokens/{}", encode(&id)), None)
                .await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// Hands every page of the list at `path` to `print`, a page of [`PAGE`]
/// items at a time, passing each page's `next` back as `cursor`.
async fn each_page(
    api: &ApiClient,
    path: &str,
    cursor: &str,
    mut print: impl FnMut(&[Value]),
) -> anyhow::Result<()> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut next = String::new();
    loop {
        let url = format!("{path}{separator}limit={PAGE}&{cursor}={}", encode(&next));
        let page = api.get(&url).await?;
        print(items(&page));
        match page["next"].as_str() {
            Some(after) => next = after.to_string(),
            None => return Ok(()),
        }
    }
}

/// A list page's items.
fn items(page: &Value) -> &[Value] {
    items_of(&page["items"])
}

fn items_of(array: &Value) -> &[Value] {
    array.as_array().map_or(&[], Vec::as_slice)
}
