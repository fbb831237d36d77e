//! Reloading the configuration without a restart.
//!
//! On SIGHUP, and when the configuration file's content changes (a Kubernetes
//! ConfigMap mounted as a volume is updated in place), the file and the
//! environment are read again. The keys of [`RELOADABLE`] take their new
//! values; any other key that changed keeps its running value and is named in
//! a warning, since it only applies after a restart. A file that no longer
//! loads is reported and the running configuration stays.
//!
//! Each process follows the reloads through a [`watch`] channel of whole
//! configurations; what a setting governs reads it through a [`Live`] cell,
//! so it sees the new value from its next use on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use toml::Value;

use crate::config::Config;
use crate::telemetry::LogFilter;

/// The keys that take effect without a restart, as `section.key`.
/// docs/configuration.md says the same in its "Reload" column (a test checks).
pub const RELOADABLE: &[&str] = &[
    "auth.require_tls",
    "auth.allow_plain",
    "auth.registration",
    "auth.failures_per_ip_per_minute",
    "auth.failures_per_account_per_ip_per_minute",
    "auth.failures_per_account_per_minute",
    "auth.failure_delay_ms",
    "auth.max_failure_delay_ms",
    "auth.registrations_per_ip_per_hour",
    "auth.scram_iterations",
    "limits.max_stanza_bytes",
    "limits.max_depth",
    "limits.max_attributes",
    "limits.connections_per_ip",
    "limits.stanzas_per_second",
    "limits.stanza_burst",
    "limits.ping_after_secs",
    "limits.idle_timeout_secs",
    "limits.write_timeout_secs",
    "limits.negotiation_timeout_secs",
    "limits.max_offline_messages",
    "limits.max_connections",
    "limits.max_presence_bytes",
    "limits.max_resources_per_account",
    "limits.max_directed_presences",
    "limits.max_roster_items",
    "limits.max_pending_subscriptions",
    "stream_management.enabled",
    "stream_management.resume_timeout_secs",
    "stream_management.max_resume_timeout_secs",
    "stream_management.ack_request_after_stanzas",
    "stream_management.ack_request_after_ms",
    "observability.log",
];

/// A setting that a reload may replace: readers take the current value,
/// which stays theirs for as long as they hold it.
#[derive(Debug)]
pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(value: T) -> Self {
        Live {
            current: RwLock::new(Arc::new(value)),
        }
    }

    pub fn get(&self) -> Arc<T> {
        // Never held across an await, nor while anything else can panic.
        self.current.read().expect("live setting lock").clone()
    }

    pub fn set(&self, value: T) {
        *self.current.write().expect("live setting lock") = Arc::new(value);
    }
}

/// The configuration to run after `loaded` was read: `loaded`'s reloadable
/// keys over `running`'s others; and the keys that changed but need a
/// restart, which keep their running values.
pub fn merge(running: &Config, loaded: &Config) -> (Config, Vec<String>) {
    let mut merged = flatten(running);
    let mut loaded_keys = flatten(loaded);
    let mut needs_restart = Vec::new();
    for key in changed_keys(running, loaded) {
        if RELOADABLE.contains(&key.as_str()) {
            match loaded_keys.remove(&key) {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        } else {
            needs_restart.push(key);
        }
    }
    let merged = unflatten(merged)
        .try_into()
        .expect("keys of two valid configurations make a valid one");
    (merged, needs_restart)
}

/// The `section.key`s whose values differ between `a` and `b` (a key unset in
/// one of them, such as `tls.cert_file`, counts as differing).
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = (flatten(a), flatten(b));
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|key| a.get(*key) != b.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Every key as `section.key`; a module's section (`modules.<name>`) counts
/// as one key.
fn flatten(config: &Config) -> BTreeMap<String, Value> {
    let table = Value::try_from(config).expect("a configuration serialises");
    let mut keys = BTreeMap::new();
    for (section, values) in table.as_table().expect("a table") {
        for (key, value) in values.as_table().expect("sections are tables") {
            keys.insert(format!("{section}.{key}"), value.clone());
        }
    }
    keys
}

fn unflatten(keys: BTreeMap<String, Value>) -> Value {
    let mut table = toml::Table::new();
    for (name, value) in keys {
        let (section, key) = name.split_once('.').expect("section.key");
        table
            .entry(section)
            .or_insert_with(|| Value::Table(toml::Table::new()))
            .as_table_mut()
            .expect("sections are tables")
            .insert(key.to_string(), value);
    }
    Value::Table(table)
}

/// Starts following reloads of the configuration at `path` (none: the
/// environment alone, reloaded on SIGHUP), which `running` was loaded from:
/// the channel gives each configuration to run, from `running` on. The log
/// filter is applied here, for every role alike. Runs inside the tokio
/// runtime.
pub fn follow(
    path: Option<PathBuf>,
    running: Config,
    log_filter: LogFilter,
) -> std::io::Result<watch::Receiver<Arc<Config>>> {
    let hangups = hangups()?;
    let check_every = Duration::from_millis(running.server.config_check_ms);
    let (sender, receiver) = watch::channel(Arc::new(running));
    tokio::spawn(run(path, sender, log_filter, hangups, check_every));
    Ok(receiver)
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;

#[cfg(unix)]
fn hangups() -> std::io::Result<Hangups> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
}

#[cfg(unix)]
async fn hangup(hangups: &mut Hangups) {
    hangups.recv().await;
}

#[cfg(not(unix))]
type Hangups = ();

#[cfg(not(unix))]
fn hangups() -> std::io::Result<Hangups> {
    Ok(())
}

#[cfg(not(unix))]
async fn hangup(_: &mut Hangups) {
    std::future::pending::<()>().await
}

async fn run(
    path: Option<PathBuf>,
    configs: watch::Sender<Arc<Config>>,
    log_filter: LogFilter,
    mut hangups: Hangups,
    check_every: Duration,
) {
    let read = |path: &Option<PathBuf>| path.as_ref().and_then(|path| std::fs::read(path).ok());
    let mut last_read = read(&path);
    // A check of 0 never fires: only SIGHUP reloads.
    let checks = !check_every.is_zero() && path.is_some();
    let mut ticker = tokio::time::interval(check_every.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            _ = hangup(&mut hangups) => "SIGHUP",
            _ = ticker.tick(), if checks => {
                let now = read(&path);
                if now == last_read {
                    continue;
                }
                "file changed"
            }
        };
        last_read = read(&path);
        let running = configs.borrow().clone();
        if let Some(next) = reload(path.as_deref(), &running, &log_filter, reason) {
            configs.send_replace(Arc::new(next));
        }
    }
}

/// The configuration read again, to run from now on; `None` when nothing
/// changes (every outcome is logged).
fn reload(
    path: Option<&std::path::Path>,
    running: &Config,
    log_filter: &LogFilter,
    reason: &str,
) -> Option<Config> {
    let loaded = match Config::load(path) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!(%error, reason, "configuration not reloaded, the running one stays");
            return None;
        }
    };
    let (next, needs_restart) = merge(running, &loaded);
    if !needs_restart.is_empty() {
        tracing::warn!(keys = ?needs_restart, reason, "changed keys apply only after a restart");
    }
    if next.observability.log != running.observability.log
        && let Err(error) = log_filter.set(&next.observability.log)
    {
        tracing::error!(%error, "observability.log not applied");
    }
    let changed = changed_keys(running, &next);
    tracing::info!(keys = ?changed, reason, "configuration reloaded");
    (!changed.is_empty()).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Config {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), toml).unwrap();
        Config::load_with_env(Some(file.path()), Vec::new()).unwrap()
    }

    #[test]
    fn reloadable_keys_change_and_others_wait_for_a_restart() {
        let running = load("[limits]\nmax_stanza_bytes = 20000\n[server]\ndomain = \"a.test\"\n");
        let loaded = load(
            "[limits]\nmax_stanza_bytes = 10000\n[server]\ndomain = \"b.test\"\n\
             [observability]\nlog = \"debug\"\n[tls]\ncert_file = \"/x.pem\"\n",
        );
        let (merged, needs_restart) = merge(&running, &loaded);
        assert_eq!(merged.limits.max_stanza_bytes, 10000);
        assert_eq!(merged.observability.log, "debug");
        assert_eq!(merged.server.domain, "a.test");
        assert_eq!(merged.tls.cert_file, None);
        assert_eq!(needs_restart, ["server.domain", "tls.cert_file"]);
        assert_eq!(
            changed_keys(&running, &merged),
            ["limits.max_stanza_bytes", "observability.log"]
        );
    }

    #[test]
    fn a_module_section_needs_a_restart() {
        let running = load("");
        let loaded = load("[modules.carbons]\nenabled = false\n");
        let (merged, needs_restart) = merge(&running, &loaded);
        assert_eq!(needs_restart, ["modules.carbons"]);
        assert!(changed_keys(&running, &merged).is_empty());
    }

    #[test]
    fn every_reloadable_key_exists() {
        let keys = flatten(&Config::default());
        for key in RELOADABLE {
            assert!(keys.contains_key(*key), "{key}");
        }
    }

    /// docs/configuration.md's "Reload" column: "yes" exactly for [`RELOADABLE`].
    #[test]
    fn the_documentation_says_which_keys_reload() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut documented = BTreeMap::new();
        let mut section = String::new();
        let mut reload_column = None;
        for line in doc.lines() {
            if let Some(heading) = line.strip_prefix("## `[") {
                section = heading.trim_end_matches("]`").to_string();
                reload_column = None;
                continue;
            }
            let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
            if line.starts_with("| Key |") {
                reload_column = cells.iter().position(|cell| *cell == "Reload");
                continue;
            }
            let (Some(column), Some(key)) = (
                reload_column,
                cells[0]
                    .strip_prefix("| `")
                    .and_then(|k| k.strip_suffix('`')),
            ) else {
                continue;
            };
            documented.insert(format!("{section}.{key}"), cells[column] == "yes");
        }
        let keys = flatten(&Config::default());
        for key in keys.keys().filter(|key| !key.starts_with("modules.")) {
            assert_eq!(
                documented.get(key),
                Some(&RELOADABLE.contains(&key.as_str())),
                "{key}: its Reload cell in docs/configuration.md"
            );
        }
    }
}
