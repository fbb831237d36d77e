//! `xmppd certs`: the cluster's certificates for a local cluster.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use xmppd_cluster_tls::identity::{role_from_name, role_name};
use xmppd_cluster_tls::issue::{ClusterCa, init_dir};
use xmppd_grpc::Role;
use xmppd_runtime::Config;

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a private cluster CA and one certificate per role, shared by every node of the
    /// role, where each role looks for them by default (`<dir>/<role>/`).
    Init {
        /// Where to write them [default: <server.data_dir>/cluster-tls].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Issue a certificate for one node from the CA `certs init` made; issuing again into
    /// the same directory rotates it (a running node loads it within cluster_tls.reload_ms).
    Issue {
        /// connection-manager, router or session.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The node id it names (the node's cluster.node_id), or `*` for every node of the role.
        #[arg(long)]
        node: String,
        /// The CA's directory [default: <server.data_dir>/cluster-tls].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Where to write ca.crt, tls.crt and tls.key [default: <dir>/<role>-<node>].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_role(name: &str) -> Result<Role, String> {
    role_from_name(name)
        .ok_or_else(|| format!("{name:?} is not a role: connection-manager, router or session"))
}

pub fn run(config: &Config, command: CertsCommand) -> anyhow::Result<()> {
    let default_dir = || config.server.data_dir.join("cluster-tls");
    match command {
        CertsCommand::Init { dir } => {
            let dir = dir.unwrap_or_else(default_dir);
            let written = init_dir(&dir).with_context(|| {
                format!(
                    "cannot create the cluster's certificates in {}",
                    dir.display()
                )
            })?;
            println!(
                "cluster CA: {} (keep {} private: it issues certificates)",
                dir.join("ca.crt").display(),
                dir.join("ca.key").display()
            );
            for role_dir in written {
                println!("  {}: ca.crt, tls.crt, tls.key", role_dir.display());
            }
        }
        CertsCommand::Issue {
            role,
            node,
            dir,
            out,
        } => {
            let dir = dir.unwrap_or_else(default_dir);
            let out = out.unwrap_or_else(|| dir.join(format!("{}-{node}", role_name(role))));
            let ca = ClusterCa::load(&dir)?;
            ca.write_secret_dir(&out, &ca.issue(role, &node)?)?;
            println!("{} {node}: {}", role_name(role), out.display());
        }
    }
    Ok(())
}
