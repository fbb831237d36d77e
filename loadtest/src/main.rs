//! `xmppd-loadtest`: drives many thousands of simulated users against any XMPP server on
//! loopback, over real c2s streams (TCP with STARTTLS, direct TLS or none, or WebSocket;
//! SCRAM-SHA-1, SCRAM-SHA-256 or PLAIN), and reports per phase: logins/s, delivered messages/s, errors by
//! kind, HdrHistogram latencies and the server's CPU and memory.
//!
//! # Layout
//!
//! - [`cli`]: the subcommands and the options they share.
//! - [`connection`]: one simulated client: stream negotiation, SASL, bind, registration, and
//!   a cancel-safe stanza reader.
//! - [`transport`]: what carries the stanzas, one implementation each behind one trait: XMPP
//!   over TCP (STARTTLS, direct TLS, plain) and over WebSocket (RFC 7395), each framed by
//!   `xmppd-protocol`'s parser; and the loopback guard on `--target`.
//! - [`sasl`]: the client side of SCRAM and PLAIN.
//! - [`population`]: account names and passwords, and the split of users across workers.
//! - [`scenario`]: provision, login, idle/chat/run (one phase engine), presence, MUC, and
//!   the account features each login turns on (carbons, blocklist).
//! - [`metrics`]: live counters and histograms shared by the session tasks.
//! - [`recorder`]: phases: snapshots into reports, progress display, server sampling.
//! - [`procstat`]: the server's CPU seconds and memory (PSS) from `/proc`.
//! - [`report`]: the JSON report, exact merging, and the human tables.
//! - [`prom`]: the optional Prometheus endpoint.
//!
//! One tokio task per session; by default everything runs on one thread (`--threads 1`),
//! which leaves the other cores to the server under test. SCRAM's PBKDF2 runs on the
//! blocking pool, and its result is cached per account.

mod cli;
mod connection;
mod metrics;
mod plot;
mod population;
mod procstat;
mod prom;
mod recorder;
mod report;
mod sasl;
mod scenario;
mod transport;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use crate::cli::{Cli, Command, Common};
use crate::connection::{ConnectOptions, TlsMode};
use crate::metrics::Metrics;
use crate::plot::Curve;
use crate::population::{Accounts, Population};
use crate::procstat::ServerSelector;
use crate::recorder::Recorder;
use crate::report::{Hist, PhaseReport, Report, SliceValue};
use crate::scenario::Env;
use crate::scenario::account::AccountFeatures;
use crate::scenario::login::Pace;
use crate::scenario::muc::MucParams;
use crate::scenario::plan::{Activity, ChatSettings, PhaseSpec, Plan};
use crate::scenario::presence::PresenceParams;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match &cli.command {
        Command::Merge { reports, json } => merge(reports, json.as_deref()),
        Command::Compare { reports, plot } => compare(reports, plot.as_deref()),
        command => {
            let common = command
                .common()
                .expect("scenario commands have common options");
            let runtime = if common.threads <= 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut builder = tokio::runtime::Builder::new_multi_thread();
                builder.worker_threads(common.threads);
                builder
            }
            .enable_all()
            .build()?;
            runtime.block_on(scenario(command, common))
        }
    }
}

async fn scenario(command: &Command, common: &Common) -> anyhow::Result<()> {
    if common.worker_index >= common.workers {
        anyhow::bail!(
            "--worker-index {} is not below --workers {}",
            common.worker_index,
            common.workers
        );
    }
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = common.prometheus {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = prom::serve(addr, metrics).await {
                tracing::error!(%addr, error = %e, "prometheus endpoint failed");
            }
        });
    }
    let target = transport::resolve_target(&common.target, common.allow_remote)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut env = env(common, target, metrics.clone())?;
    if let Command::Check { timeout, .. } = command {
        return scenario::check::run(&env, *timeout).await;
    }
    let server = match (&common.server_pid[..], &common.server_process) {
        ([], None) => None,
        ([], Some(name)) => Some(ServerSelector::Name(name.clone())),
        (pids, _) => Some(ServerSelector::Pids(pids.to_vec())),
    };
    let mut recorder = Recorder::new(metrics, server, common.quiet);
    let params = match command {
        Command::Provision { concurrency, .. } => {
            scenario::provision::run(Arc::new(env), &mut recorder, *concurrency).await;
            serde_json::json!({ "concurrency": concurrency })
        }
        Command::Login {
            count,
            rate,
            concurrency,
            ..
        } => {
            let users = env.slice(1);
            let count = count.unwrap_or(users.end - users.start);
            let pace = rate.map_or(Pace::Concurrency(*concurrency), Pace::Rate);
            scenario::login::run(Arc::new(env), &mut recorder, count, pace).await;
            serde_json::json!({ "count": count, "rate": rate, "concurrency": concurrency })
        }
        Command::Idle { ramp, duration, .. } => {
            let plan = idle_plan(common.users, ramp.login_rate, *duration);
            scenario::traffic::run(Arc::new(env), &mut recorder, &plan).await;
            serde_json::json!({ "login_rate": ramp.login_rate, "duration_s": duration.as_secs_f64() })
        }
        Command::Chat {
            ramp,
            duration,
            rate,
            window,
            drain,
            ..
        } => {
            let chat = ChatSettings {
                rate: *rate,
                window: *window,
            };
            let plan = chat_plan(common.users, ramp.login_rate, *duration, chat, *drain);
            scenario::traffic::run(Arc::new(env), &mut recorder, &plan).await;
            serde_json::json!({
                "login_rate": ramp.login_rate, "duration_s": duration.as_secs_f64(),
                "rate": rate, "window": window, "drain_s": drain.as_secs_f64(),
            })
        }
        Command::Presence {
            contacts,
            login_rate,
            churn,
            duration,
            setup_timeout,
            ..
        } => {
            let params = PresenceParams {
                contacts: *contacts,
                login_rate: *login_rate,
                churn_rate: *churn,
                duration: *duration,
                setup_timeout: *setup_timeout,
            };
            scenario::presence::run(Arc::new(env), &mut recorder, params).await;
            serde_json::json!({
                "contacts": contacts, "login_rate": login_rate, "churn": churn,
                "duration_s": duration.as_secs_f64(),
            })
        }
        Command::Muc {
            occupants,
            service,
            rate,
            login_rate,
            duration,
            join_timeout,
            ..
        } => {
            let params = MucParams {
                occupants: (*occupants).max(1),
                service: service
                    .clone()
                    .unwrap_or_else(|| format!("conference.{}", common.domain)),
                rate: *rate,
                login_rate: *login_rate,
                duration: *duration,
                join_timeout: *join_timeout,
            };
            let json = serde_json::json!({
                "occupants": occupants, "service": params.service, "rate": rate,
                "login_rate": login_rate, "duration_s": duration.as_secs_f64(),
            });
            scenario::muc::run(Arc::new(env), &mut recorder, params).await;
            json
        }
        Command::Run { scenario: path, .. } => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let plan = Plan::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
            // The file's population wins over --users.
            env.population.users = plan.users;
            scenario::traffic::run(Arc::new(env), &mut recorder, &plan).await;
            serde_json::json!({ "scenario_file": path, "plan": format!("{plan:?}") })
        }
        Command::Merge { .. } | Command::Compare { .. } => unreachable!("handled in main"),
        Command::Check { .. } => unreachable!("handled above"),
    };
    let params = with_features(params, common);
    let report = recorder.finish(Report {
        tool: format!("xmppd-loadtest {}", env!("CARGO_PKG_VERSION")),
        scenario: command.name().into(),
        target: common.target.clone(),
        domain: common.domain.clone(),
        params,
        workers: common.workers,
        worker_indexes: vec![common.worker_index],
        server_memory_baseline_bytes: None,
        phases: Vec::new(),
    });
    output(&report, common.json.as_deref())
}

/// The account features go into the report's parameters when asked for, so a report says
/// what its users turned on.
fn with_features(mut params: serde_json::Value, common: &Common) -> serde_json::Value {
    if let Some(map) = params.as_object_mut() {
        if common.carbons {
            map.insert("carbons".into(), true.into());
        }
        if common.blocklist > 0 {
            map.insert("blocklist".into(), common.blocklist.into());
        }
    }
    params
}

fn env(common: &Common, target: transport::Target, metrics: Arc<Metrics>) -> anyhow::Result<Env> {
    let tls = match (target.framing.tls_from_url(), common.tls) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--tls is for a TCP target: a WebSocket URL says it (TLS for wss://, none for ws://)"
        ),
        (Some(true), None) => TlsMode::Direct,
        (Some(false), None) => TlsMode::Plain,
        (None, tls) => tls.unwrap_or(TlsMode::Starttls),
    };
    Ok(Env {
        opts: ConnectOptions {
            addrs: target.addrs.into(),
            tls_config: connection::client_tls_config(&target.framing),
            framing: target.framing,
            domain: common.domain.clone(),
            tls,
            mechanism: common.mechanism,
            resource: common.resource.clone(),
            step_timeout: common.step_timeout,
        },
        accounts: Accounts {
            prefix: common.user_prefix.clone(),
            password_pattern: common.password.clone(),
            domain: common.domain.clone(),
        },
        population: Population {
            users: common.users,
            workers: common.workers,
            index: common.worker_index,
        },
        metrics,
        features: AccountFeatures {
            carbons: common.carbons,
            blocklist: common.blocklist,
        },
    })
}

fn phase(name: &str, users: u64, join_rate: Option<f64>) -> PhaseSpec {
    PhaseSpec {
        name: name.into(),
        duration: None,
        users,
        join_rate,
        activity: Activity::Idle,
        message_rate: None,
        until_drained: false,
    }
}

fn idle_plan(users: u64, login_rate: f64, hold: std::time::Duration) -> Plan {
    Plan {
        users,
        presence: true,
        chat: ChatSettings::default(),
        phases: vec![
            phase("ramp-up", users, Some(login_rate)),
            PhaseSpec {
                duration: Some(hold),
                ..phase("hold", users, None)
            },
            phase("ramp-down", 0, Some(login_rate)),
        ],
    }
}

fn chat_plan(
    users: u64,
    login_rate: f64,
    steady: std::time::Duration,
    chat: ChatSettings,
    drain: std::time::Duration,
) -> Plan {
    Plan {
        users,
        presence: true,
        chat,
        phases: vec![
            phase("ramp-up", users, Some(login_rate)),
            PhaseSpec {
                duration: Some(steady),
                activity: Activity::Chat,
                ..phase("steady", users, None)
            },
            PhaseSpec {
                duration: Some(drain),
                until_drained: true,
                ..phase("drain", users, None)
            },
            phase("ramp-down", 0, Some(login_rate)),
        ],
    }
}

fn output(report: &Report, json: Option<&Path>) -> anyhow::Result<()> {
    println!("{}", report::table(report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn merge(paths: &[std::path::PathBuf], json: Option<&Path>) -> anyhow::Result<()> {
    let reports = paths
        .iter()
        .map(|p| read_report(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    output(&Report::merge(&reports)?, json)
}

fn compare(specs: &[String], plot: Option<&Path>) -> anyhow::Result<()> {
    let runs = specs
        .iter()
        .map(|spec| {
            let (label, paths) = match spec.split_once('=') {
                Some((label, paths)) => (label.to_owned(), paths),
                None => {
                    let path = Path::new(spec.as_str());
                    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or(spec);
                    (stem.to_owned(), spec.as_str())
                }
            };
            // Several reports, comma-separated, are rounds of the same run.
            let rounds = paths
                .split(',')
                .map(|path| read_report(Path::new(path)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok((label, rounds))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print!("{}", report::compare(&runs));
    let Some(dir) = plot else {
        return Ok(());
    };
    // The charts draw each run's first round: curves of several rounds would hide each other.
    let firsts: Vec<(String, Report)> = runs
        .into_iter()
        .map(|(label, mut rounds)| (label, rounds.swap_remove(0)))
        .collect();
    plot_latencies(dir, &firsts)?;
    plot_timelines(dir, &firsts)
}

/// Which of a phase's latency histograms a chart draws.
type LatencyOf = fn(&PhaseReport) -> &Hist;

/// For each phase of the first run, and each latency any run has samples of, one chart with
/// every run's curve: `dir/<phase>-delivery.svg`, `dir/<phase>-login.svg`.
fn plot_latencies(dir: &Path, runs: &[(String, Report)]) -> anyhow::Result<()> {
    let Some((_, first)) = runs.first() else {
        return Ok(());
    };
    let latencies: [(&str, LatencyOf); 2] = [
        ("delivery", |phase| &phase.delivery_latency),
        ("login", |phase| &phase.login_latency),
    ];
    for phase in &first.phases {
        for (latency, of) in latencies {
            let curves: Vec<Curve<'_>> = runs
                .iter()
                .filter_map(|(label, report)| {
                    let same = report.phases.iter().find(|p| p.name == phase.name)?;
                    Some(Curve {
                        label,
                        micros: &of(same).0,
                    })
                })
                .collect();
            let path = dir.join(format!("{}-{latency}.svg", phase.name));
            let title = format!(
                "{latency} latency by percentile: {} {}",
                first.scenario, phase.name
            );
            if plot::latency_by_percentile(&path, &title, &curves)? {
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// The runs' rates, sessions and latency second by second, one chart each:
/// `dir/timeline-<name>.svg`.
fn plot_timelines(dir: &Path, runs: &[(String, Report)]) -> anyhow::Result<()> {
    let Some((_, first)) = runs.first() else {
        return Ok(());
    };
    let charts: [(&str, &str, SliceValue); 5] = [
        ("delivered", "delivered messages/s", |slice, seconds| {
            Some(slice.counters.messages_delivered as f64 / seconds)
        }),
        ("logins", "logins/s", |slice, seconds| {
            Some(slice.counters.logins as f64 / seconds)
        }),
        ("errors", "errors/s", |slice, seconds| {
            Some(slice.errors as f64 / seconds)
        }),
        ("sessions", "sessions online", |slice, _| {
            Some(slice.sessions as f64)
        }),
        ("delivery-p99", "delivery latency p99 (ms)", |slice, _| {
            let micros = slice.delivery_latency.unpack();
            (!micros.is_empty()).then(|| micros.value_at_quantile(0.99) as f64 / 1000.0)
        }),
    ];
    for (name, measure, value) in charts {
        let series: Vec<(&str, Vec<(f64, f64)>)> = runs
            .iter()
            .map(|(label, report)| (label.as_str(), report.over_time(value)))
            .collect();
        let path = dir.join(format!("timeline-{name}.svg"));
        let title = format!("{measure}: {}", first.scenario);
        if plot::over_time(&path, &title, measure, &series)? {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
