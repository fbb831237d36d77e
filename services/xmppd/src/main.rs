//! `xmppd`: the all-in-one server, each cluster role, and the admin CLI.
//!
//! ```text
//! xmppd [run]                 all-in-one: every service in one process
//! xmppd connection-manager    cluster role: the edge
//! xmppd router                cluster role: the stanza switch
//! xmppd session               cluster role: accounts, rosters, presence
//! xmppd migrate              apply the database migrations
//! xmppd user add|remove|list|passwd, xmppd resources   administration
//! xmppd admin grant|revoke    the admin role (the admin API)
//! xmppd api ...               the admin API of a running server or cluster
//! xmppd certs init            the cluster's certificates for local runs
//! ```

mod admin;
mod api;
mod assemble;
mod certs;
mod local;
mod roles;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use xmppd_runtime::Config;

#[derive(Parser)]
#[command(name = "xmppd", version, about = "A clustered XMPP server")]
struct Cli {
    /// TOML configuration file; every key can also be set as
    /// XMPPD_<SECTION>__<KEY> in the environment.
    #[arg(long, short, global = true, env = "XMPPD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in this process (the default).
    Run,
    /// Run a connection-manager (cluster role).
    ConnectionManager,
    /// Run a router (cluster role).
    Router,
    /// Run a session replica (cluster role).
    Session,
    /// Apply the database migrations and exit (before servers that do not,
    /// `storage.migrate = false`, start).
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Grant or revoke the admin role.
    #[command(subcommand)]
    Admin(admin::RoleCommand),
    /// Administer a running server or cluster through its HTTP admin API.
    Api(api::ApiArgs),
    /// List the bound resources (`sessions`, its former name, still works).
    #[command(alias = "sessions")]
    Resources,
    /// Manage the cluster's certificates (mutual TLS between nodes).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// The multi-threaded runtime with `worker_threads` threads, or tokio's
/// default (one per CPU available to the process) for 0.
fn runtime(worker_threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.enable_all().build()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("xmppd: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match runtime(config.server.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("xmppd: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let path = cli.config;
    let result = runtime.block_on(async move {
        use roles::with_telemetry as serve;
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => serve(config, path, "xmppd", "xmppd", roles::all_in_one).await,
            Command::ConnectionManager => {
                let role = roles::connection_manager;
                serve(config, path, "xmppd-connection-manager", "cm", role).await
            }
            Command::Router => serve(config, path, "xmppd-router", "router", roles::router).await,
            Command::Session => {
                serve(config, path, "xmppd-session", "session", roles::session).await
            }
            Command::Migrate => admin::migrate(&config).await,
            Command::User(command) => admin::user(&config, command).await,
            Command::Admin(command) => admin::role(&config, command).await,
            Command::Api(args) => api::run(&config, args).await,
            Command::Resources => admin::resources(&config).await,
            Command::Certs(command) => certs::run(&config, command),
        }
    });
    exit_code(result)
}

fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xmppd: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
