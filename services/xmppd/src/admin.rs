//! The admin CLI: accounts in the store, bound resources in the registry. It works
//! on the deployment the configuration names: the embedded SQLite database
//! (also while the server runs) or the cluster's Postgres and Redis.

use std::io::BufRead;

use anyhow::{Context, bail};
use axum::routing::get;
use clap::Subcommand;
use xmppd_protocol::jid::Jid;
use xmppd_registry::SharedRegistry;
use xmppd_runtime::Config;
use xmppd_storage::{Credential, Migrations, StoreError};

use crate::assemble;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from --password, from
    /// XMPPD_PASSWORD, or from the first line of standard input.
    Add {
        jid: String,
        #[arg(long, env = "XMPPD_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Delete an account and everything stored for it.
    Remove {
        jid: String,
        /// Succeed when there is no such account (a script that starts afresh).
        #[arg(long)]
        if_exists: bool,
    },
    /// Set a new password.
    Passwd {
        jid: String,
        #[arg(long, env = "XMPPD_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// List the accounts of the configured domain (or all with --all).
    List {
        #[arg(long)]
        all: bool,
    },
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
        UserCommand::Add { jid, password } => {
            let jid = account(config, &jid)?;
            let credentials = credentials(config, password)?;
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
        UserCommand::Passwd { jid, password } => {
            let jid = account(config, &jid)?;
            let credentials = credentials(config, password)?;
            match store.set_credentials(jid.as_str(), &credentials).await {
                Ok(()) => println!("password of {jid} changed"),
                Err(StoreError::NotFound) => bail!("{jid} does not exist"),
                Err(error) => return Err(error.into()),
            }
        }
        UserCommand::List { all } => {
            let domain = (!all).then_some(config.server.domain.as_str());
            for jid in store.list_accounts(domain).await? {
                println!("{jid}");
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

fn credentials(config: &Config, password: Option<String>) -> anyhow::Result<Vec<Credential>> {
    let password = match password {
        Some(password) => password,
        None => {
            eprintln!("password (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    let keys = xmppd_sasl::new_credentials(&password, config.auth.scram_iterations)
        .map_err(|error| anyhow::anyhow!("unusable password: {error}"))?;
    Ok(keys.into_iter().map(Credential::from).collect())
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
    for resource in registry.all_resources().await? {
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
    Ok(out)
}

/// `GET /sessions` on the all-in-one server's HTTP endpoint.
pub fn sessions_route(registry: SharedRegistry) -> axum::Router {
    axum::Router::new().route(
        "/sessions",
        get(move || {
            let registry = registry.clone();
            async move {
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
    let request = format!("GET /sessions HTTP/1.0\r\nHost: {address}\r\n\r\n");
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
