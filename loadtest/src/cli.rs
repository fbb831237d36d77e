//! Command line: the options every scenario shares, and one subcommand per scenario.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::connection::TlsMode;
use crate::sasl::Mechanism;
use crate::scenario::plan::parse_duration;

/// Load generator for XMPP servers: provisioning, login storms, idle sessions, chat, presence
/// and MUC fan-out, with HdrHistogram latency reports. Talks to loopback servers only.
#[derive(Debug, Parser)]
#[command(name = "xmppd-loadtest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the accounts user{i}@domain by in-band registration (existing ones are kept).
    Provision {
        #[command(flatten)]
        common: Common,
        /// Registrations in flight.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Smoke test of a deployment: users 0 and 1 log in and one sends the other a message,
    /// which must arrive; exits with an error naming the step that failed.
    Check {
        #[command(flatten)]
        common: Common,
        /// How long the message may take.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Connect storm: log in and out, at a rate (open loop) or a concurrency (closed loop).
    Login {
        #[command(flatten)]
        common: Common,
        /// Logins in all (default: once per user of this worker).
        #[arg(long)]
        count: Option<u64>,
        /// Logins started per second, whatever the server's pace (open loop).
        #[arg(long, conflicts_with = "concurrency", value_parser = positive)]
        rate: Option<f64>,
        /// Logins in flight (closed loop); the default when no --rate is given.
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
    },
    /// Log every user in and hold the sessions for a while (memory per session).
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        ramp: Ramp,
        /// How long to hold the sessions once all are in.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
    },
    /// One-to-one chat between pairs (user 2k with 2k+1), with end-to-end latency and loss.
    Chat {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        ramp: Ramp,
        /// Length of the measured steady phase.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Total messages/s over all users (open loop); 0 runs a closed loop at the server's
        /// pace instead.
        #[arg(long, default_value_t = 0.0, value_parser = non_negative)]
        rate: f64,
        /// Closed loop: messages in flight per pair.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        window: u32,
        /// After the steady phase, wait at most this long for messages still in flight.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        drain: Duration,
    },
    /// Rosters of R mutual contacts, then login/logout churn: presence fan-out.
    Presence {
        #[command(flatten)]
        common: Common,
        /// Contacts per user (half on each side of a ring).
        #[arg(long, default_value_t = 10)]
        contacts: u64,
        /// Logins per second while the users first come in.
        #[arg(long, default_value_t = 200.0, value_parser = positive)]
        login_rate: f64,
        /// Logouts (each followed by a login) per second.
        #[arg(long, default_value_t = 20.0, value_parser = positive)]
        churn: f64,
        /// Length of the churn phase.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Limit for the roster handshake phase.
        #[arg(long, default_value = "120s", value_parser = parse_duration)]
        setup_timeout: Duration,
    },
    /// Multi-user chat rooms of K occupants (XEP-0045): group chat fan-out.
    Muc {
        #[command(flatten)]
        common: Common,
        /// Occupants per room.
        #[arg(long, default_value_t = 10)]
        occupants: u64,
        /// The MUC service (default: conference.<domain>).
        #[arg(long)]
        service: Option<String>,
        /// Group chat messages per second over all occupants, before fan-out.
        #[arg(long, default_value_t = 50.0, value_parser = positive)]
        rate: f64,
        /// Logins per second while the occupants come in.
        #[arg(long, default_value_t = 200.0, value_parser = positive)]
        login_rate: f64,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// Limit for the join phase.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        join_timeout: Duration,
    },
    /// Run a TOML scenario file of phases (see the README).
    Run {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        scenario: PathBuf,
    },
    /// Combine the JSON reports of several workers of one run, exactly.
    Merge {
        reports: Vec<PathBuf>,
        /// Write the merged report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Side-by-side table of reports, with ratios to the first: `label=report.json` or a path
    /// (labelled by its file name); `label=a.json,b.json,...` are rounds of one run, compared
    /// by their medians and the median of the rounds' ratios.
    Compare {
        #[arg(required = true)]
        reports: Vec<String>,
        /// Also draw each phase's latency by percentile, one curve per report, as
        /// `DIR/<phase>-delivery.svg` and `DIR/<phase>-login.svg`.
        #[arg(long, value_name = "DIR")]
        plot: Option<PathBuf>,
    },
}

/// Login pacing for the scenarios that bring users in before measuring.
#[derive(Debug, Args)]
pub struct Ramp {
    /// Logins per second while ramping up (and logouts while ramping down).
    #[arg(long, default_value_t = 500.0, value_parser = positive)]
    pub login_rate: f64,
}

#[derive(Debug, Args)]
pub struct Common {
    /// The server: `host:port` for XMPP over TCP, or a `ws://` or `wss://` URL for XMPP over
    /// WebSocket (RFC 7395); a name is resolved once, at start.
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub target: String,
    /// Load a target that is not on loopback: a server you operate.
    #[arg(long)]
    pub allow_remote: bool,
    /// XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// How a TCP stream is secured (default: starttls). A WebSocket's URL says it instead:
    /// TLS for wss://, none for ws://.
    #[arg(long, value_enum)]
    pub tls: Option<TlsMode>,
    /// SASL mechanism (default: the strongest the server offers).
    #[arg(long, value_enum)]
    pub mechanism: Option<Mechanism>,
    /// Users in the population (all workers together).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Account names are <prefix><i>.
    #[arg(long, default_value = "user")]
    pub user_prefix: String,
    /// Password of user i; `{i}` is replaced by the index.
    #[arg(long, default_value = "pass{i}")]
    pub password: String,
    #[arg(long, default_value = "loadtest")]
    pub resource: String,
    /// Load generators sharing the population.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// This generator's index (a Kubernetes indexed Job sets JOB_COMPLETION_INDEX).
    #[arg(long, env = "JOB_COMPLETION_INDEX", default_value_t = 0)]
    pub worker_index: u32,
    /// Limit for each protocol step (connect, TLS, each SASL round trip, bind).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub step_timeout: Duration,
    /// After each login, enable message carbons (XEP-0280). A server without them answers
    /// with an error, counted as `carbons:<condition>`; the session goes on.
    #[arg(long)]
    pub carbons: bool,
    /// After each login, retrieve the blocklist and block N JIDs (XEP-0191) that are none of
    /// the run's users (`blocked-<i>-<k>@domain`). Errors are counted as `blocklist:` and
    /// `block:<condition>`; the session goes on.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub blocklist: u32,
    /// The server's process id, to report its CPU and memory (repeatable).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Or its process name: every process of that name (or script name) is summed.
    #[arg(long, conflicts_with = "server_pid")]
    pub server_process: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Serve live Prometheus metrics at this address while running.
    #[arg(long)]
    pub prometheus: Option<SocketAddr>,
    /// Runtime threads; 1 runs every session on one thread.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
}

/// A rate that timers can divide by.
fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{text:?} is not a number >= 0")),
    }
}

impl Command {
    pub fn common(&self) -> Option<&Common> {
        match self {
            Self::Provision { common, .. }
            | Self::Check { common, .. }
            | Self::Login { common, .. }
            | Self::Idle { common, .. }
            | Self::Chat { common, .. }
            | Self::Presence { common, .. }
            | Self::Muc { common, .. }
            | Self::Run { common, .. } => Some(common),
            Self::Merge { .. } | Self::Compare { .. } => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Provision { .. } => "provision",
            Self::Check { .. } => "check",
            Self::Login { .. } => "login",
            Self::Idle { .. } => "idle",
            Self::Chat { .. } => "chat",
            Self::Presence { .. } => "presence",
            Self::Muc { .. } => "muc",
            Self::Run { .. } => "run",
            Self::Merge { .. } => "merge",
            Self::Compare { .. } => "compare",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn refuses_rates_timers_cannot_use() {
        assert!(Cli::try_parse_from(["xmppd-loadtest", "login", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["xmppd-loadtest", "muc", "--rate", "-3"]).is_err());
        assert!(Cli::try_parse_from(["xmppd-loadtest", "chat", "--window", "0"]).is_err());
        assert!(Cli::try_parse_from(["xmppd-loadtest", "chat", "--rate", "0"]).is_ok());
    }

    #[test]
    fn chat_defaults() {
        let cli = Cli::try_parse_from(["xmppd-loadtest", "chat", "--users", "10"]).unwrap();
        let Command::Chat {
            common,
            rate,
            window,
            duration,
            ..
        } = cli.command
        else {
            panic!("not chat");
        };
        assert_eq!((common.users, rate, window), (10, 0.0, 1));
        assert_eq!(duration, Duration::from_secs(30));
        assert_eq!(
            (common.target.as_str(), common.allow_remote),
            ("127.0.0.1:5222", false)
        );
        assert_eq!((common.carbons, common.blocklist), (false, 0));
    }

    #[test]
    fn account_features_are_options_of_every_scenario() {
        for scenario in ["login", "idle", "chat", "presence", "muc"] {
            let cli =
                Cli::try_parse_from(["xmppd-loadtest", scenario, "--carbons", "--blocklist", "3"])
                    .unwrap();
            let common = cli.command.common().unwrap();
            assert_eq!((common.carbons, common.blocklist), (true, 3), "{scenario}");
        }
    }
}
