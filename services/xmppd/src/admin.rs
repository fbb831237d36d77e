//! The admin CLI: accounts in the store, bound resources in the registry. It works
//! on the deployment the configuration names: the embedded SQLite database
//! (also while the server runs) or the cluster's Postgres and Redis.

use std::io::BufRead;
use std::os::fd::AsFd;

use anyhow::{Context, bail};
use axum::routing::get;
use clap::Subcommand;
use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
use xmppd_protocol::jid::Jid;
use xmppd_registry::SharedRegistry;
use xmppd_runtime::Config;
use xmppd_storage::{Credential, Migrations, StoreError};

use crate::assemble;

/// Accounts or resources read per round trip when listing them.
const LIST_PAGE: u32 = 500;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is asked for on the terminal
    /// (without echo), or read from XMPPD_PASSWORD, or from the first line
    /// of standard input when that is not a terminal; never from the command
    /// line, where other users of the machine could read it.
    Add { jid: String },
    /// Delete an account and everything stored for it.
    Remove {
        jid: String,
        /// Succeed when there is no such account (a script that starts afresh).
        #[arg(long)]
        if_exists: bool,
    },
    /// Set a new password, read as `user add` reads it.
    Passwd { jid: String },
    /// List the accounts of the configured domain (or all with --all).
    List {
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
pub enum RoleCommand {
    /// Give an account the admin role (the admin API and ad-hoc commands).
    Grant { jid: String },
    /// Take the admin role back.
    Revoke { jid: String },
}

/// `xmppd admin grant|revoke`: on the database, recorded in the audit log.
pub async fn role(config: &Config, command: RoleCommand) -> anyhow::Result<()> {
    let store = assemble::store(config).await?;
    xmppd_admin::migrate(&store).await?;
    let (jid, admin) = match command {
        RoleCommand::Grant { jid } => (jid, true),
        RoleCommand::Revoke { jid } => (jid, false),
    };
    let jid = account(config, &jid)?;
    if admin && !store.account_exists(jid.as_str()).await? {
        bail!("{jid} does not exist");
    }
    let changed = xmppd_admin::auth::set_role(&store, jid.as_str(), admin).await?;
    match (admin, changed) {
        (true, true) => println!("{jid} is an administrator"),
        (true, false) => println!("{jid} was an administrator already"),
        (false, true) => println!("{jid} is no longer an administrator"),
        (false, false) => println!("{jid} was not an administrator"),
    }
    store.close().await;
    Ok(())
}

/// `xmppd migrate`: applies the pending migrations of the core tables and of
/// every account module, whatever `storage.migrate` says, and exits. Applied
/// before the servers of a new version start (the Helm chart's pre-install and
/// pre-upgrade Job), with a database role that may change the schema.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = assemble::open_store(config, Migrations::Apply).await?;
    assemble::modules(config, &store).await?;
    println!(
        "{}: migrations applied",
        assemble::redact(&config.storage.url_or_embedded(&config.server.data_dir))
    );
    Ok(())
}

pub async fn user(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let store = assemble::store(config).await?;
    match command {
        UserCommand::Add { jid } => {
            let jid = account(config, &jid)?;
            let credentials = credentials(config)?;
            match store.create_account(jid.as_str(), &credentials).await {
                Ok(()) => println!("created {jid}"),
                Err(StoreError::AlreadyExists) => bail!("{jid} already exists"),
                Err(error) => return Err(error.into()),
            }
        }
        UserCommand::Remove { jid, if_exists } => {
            let jid = account(config, &jid)?;
            if store.delete_account(jid.as_str()).await? {
                println!("removed {jid}");
            } else if if_exists {
                println!("{jid} does not exist");
            } else {
                bail!("{jid} does not exist");
            }
        }
        UserCommand::Passwd { jid } => {
            let jid = account(config, &jid)?;
            let credentials = credentials(config)?;
            match store
                .set_credentials(jid.as_str(), &credentials, None)
                .await
            {
                Ok(()) => println!("password of {jid} changed"),
                Err(StoreError::NotFound) => bail!("{jid} does not exist"),
                Err(error) => return Err(error.into()),
            }
        }
        UserCommand::List { all } => {
            let domain = (!all).then_some(config.server.domain.as_str());
            let mut after = String::new();
            loop {
                let page = store.accounts_page(domain, "", &after, LIST_PAGE).await?;
                for account in &page {
                    println!("{}", account.jid);
                }
                match page.last() {
                    Some(last) if page.len() == LIST_PAGE as usize => after = last.jid.clone(),
                    _ => break,
                }
            }
        }
    }
    store.close().await;
    Ok(())
}

/// The bare JID of an account of this server.
fn account(config: &Config, jid: &str) -> anyhow::Result<Jid> {
    let jid = Jid::parse(jid).with_context(|| format!("invalid JID {jid:?}"))?;
    if jid.node().is_none() || jid.resource().is_some() {
        bail!(
            "{jid} is not an account JID (expected user@{})",
            config.server.domain
        );
    }
    if jid.domain() != config.server.domain {
        bail!(
            "{jid} is not on this server's domain {}",
            config.server.domain
        );
    }
    Ok(jid)
}

fn credentials(config: &Config) -> anyhow::Result<Vec<Credential>> {
    let password = password(true)?;
    let keys = xmppd_sasl::new_credentials(&password, config.auth.scram_iterations)
        .map_err(|error| anyhow::anyhow!("unusable password: {error}"))?;
    Ok(keys.into_iter().map(Credential::from).collect())
}

/// A password from XMPPD_PASSWORD, or else from the terminal without echo
/// (typed twice when `confirm`: a new password), or else from the first
/// line of standard input when that is not a terminal (a pipe, a file).
pub fn password(confirm: bool) -> anyhow::Result<String> {
    let password = match std::env::var("XMPPD_PASSWORD") {
        Ok(password) => password,
        Err(_) => read_password(confirm)?,
    };
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(password)
}

fn read_password(confirm: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let Ok(terminal) = tcgetattr(stdin.as_fd()) else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    };
    let mut quiet = terminal.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(stdin.as_fd(), OptionalActions::Now, &quiet)?;
    let read = |prompt: &str| -> std::io::Result<String> {
        eprint!("{prompt}");
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let typed = read("password: ").and_then(|first| {
        let again = if confirm {
            read("again: ")?
        } else {
            first.clone()
        };
        Ok((first, again))
    });
    // Echo comes back whatever was read.
    tcsetattr(stdin.as_fd(), OptionalActions::Now, &terminal)?;
    let (first, again) = typed?;
    if first != again {
        bail!("the two passwords differ");
    }
    Ok(first)
}

/// Lists the bound resources: from Redis for a cluster, or by asking the running
/// all-in-one server, whose registry lives in its memory.
pub async fn resources(config: &Config) -> anyhow::Result<()> {
    let lines = if config.registry.url.is_empty() {
        ask_running_server(config).await?
    } else {
        let registry =
            assemble::registry(config, "admin CLI", xmppd_registry::Caching::Off).await?;
        resource_lines(&registry).await?
    };
    print!("{lines}");
    Ok(())
}

async fn resource_lines(registry: &SharedRegistry) -> anyhow::Result<String> {
    let mut out = format!(
        "{:<48} {:<28} {:<10} {:>8}\n",
        "JID", "NODE", "PRESENCE", "PRIORITY"
    );
    let mut cursor = String::new();
    loop {
        let page = registry.resources_page(&cursor, LIST_PAGE as usize).await?;
        for resource in &page.resources {
            let presence = if resource.available {
                "available"
            } else {
                "bound"
            };
            out.push_str(&format!(
                "{:<48} {:<28} {:<10} {:>8}\n",
                resource.full_jid, resource.node_id, presence, resource.priority
            ));
        }
        match page.next {
            Some(next) => cursor = next,
            None => return Ok(out),
        }
    }
}

/// `GET /sessions` on the all-in-one server's HTTP endpoint, for a caller
/// that shows `token` as `Authorization: Bearer <token>`: the list names
/// every connected user, so the metrics port alone does not give it away.
pub fn sessions_route(registry: SharedRegistry, token: String) -> axum::Router {
    axum::Router::new().route(
        "/sessions",
        get(move |headers: axum::http::HeaderMap| {
            let registry = registry.clone();
            let allowed = bearer(&headers).is_some_and(|given| {
                bool::from(subtle::ConstantTimeEq::ct_eq(
                    given.as_bytes(),
                    token.as_bytes(),
                ))
            });
            async move {
                if !allowed {
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        "a bearer token is required (see observability.sessions_token)\n".into(),
                    );
                }
                match resource_lines(&registry).await {
                    Ok(lines) => (axum::http::StatusCode::OK, lines),
                    Err(error) => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("{error}\n"),
                    ),
                }
            }
        }),
    )
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The token of `/sessions`: `observability.sessions_token`, or else the one
/// in `<data_dir>/sessions.token`, which the server (`create`) writes at
/// start, readable by its user only, and the admin CLI reads.
pub fn sessions_token(config: &Config, create: bool) -> anyhow::Result<String> {
    if !config.observability.sessions_token.is_empty() {
        return Ok(config.observability.sessions_token.clone());
    }
    let path = config.server.data_dir.join("sessions.token");
    if !create {
        return std::fs::read_to_string(&path)
            .map(|token| token.trim().to_string())
            .with_context(|| format!("cannot read the server's token {}", path.display()));
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

/// Writes `text` to a file that only its owner may read.
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

async fn ask_running_server(config: &Config) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = &config.observability.http;
    if address.is_empty() {
        bail!(
            "observability.http is disabled, so the running server cannot be asked for its bound resources"
        );
    }
    let mut socket = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("is the server running? cannot reach {address}"))?;
    let token = sessions_token(config, false)?;
    let request = format!(
        "GET /sessions HTTP/1.0\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(
            "the server answered: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_string())
}
