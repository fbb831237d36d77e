//! The scenarios. Each drives this worker's slice of the population through phases and
//! leaves its measurements in the [`Recorder`](crate::recorder::Recorder).
//!
//! - [`provision`]: accounts by in-band registration.
//! - [`login`]: a connect storm, open loop at a rate or closed loop at a concurrency.
//! - [`traffic`]: the phase engine behind `idle`, `chat` and `run`: users join and leave at
//!   a rate, and chat in pairs (open or closed loop) or stay idle.
//! - [`presence`]: rosters of R contacts, then login/logout churn; presence fan-out.
//! - [`muc`]: rooms of K occupants, group chat fan-out.
//! - [`plan`]: the TOML scenario file.
//! - [`account`]: features each user turns on after its login (`--carbons`, `--blocklist`).

pub mod account;
pub mod check;
pub mod login;
pub mod muc;
pub mod plan;
pub mod presence;
pub mod provision;
pub mod traffic;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::Interval;

use crate::connection::{ConnectOptions, Connection, XmppError};
use crate::metrics::{Metrics, inc};
use crate::population::{Accounts, Population};
use crate::scenario::account::AccountFeatures;

/// What every scenario needs to reach the server as its users.
pub struct Env {
    pub opts: ConnectOptions,
    pub accounts: Accounts,
    pub population: Population,
    pub metrics: Arc<Metrics>,
    /// Turned on by every login, before the scenario gets the session.
    pub features: AccountFeatures,
}

impl Env {
    /// The JID a user of ours binds: we ask every session for the same resource.
    pub fn full_jid(&self, i: u64) -> String {
        format!("{}/{}", self.accounts.bare_jid(i), self.opts.resource)
    }

    pub fn slice(&self, group: u64) -> Range<u64> {
        self.population.slice(group)
    }

    /// Logs user `i` in, counting the login or the failure and its kind, then turns on the
    /// account features asked for. The login time ends at the bound resource, before them;
    /// a feature the server refuses is counted as an error and the session kept.
    pub async fn login(&self, i: u64) -> Result<Connection, XmppError> {
        let start = Instant::now();
        let result = Connection::login(
            &self.opts,
            &self.accounts.username(i),
            &self.accounts.password(i),
        )
        .await;
        let mut conn = match result {
            Ok(conn) => conn,
            Err(e) => {
                inc(&self.metrics.login_failures);
                self.metrics.error(e.kind());
                return Err(e);
            }
        };
        inc(&self.metrics.logins);
        self.metrics
            .record_login(start.elapsed().as_micros() as u64);
        if self.features.any() {
            let enabled = self
                .features
                .enable(
                    &mut conn,
                    i,
                    &self.opts.domain,
                    self.opts.step_timeout,
                    &self.metrics,
                )
                .await;
            if let Err(e) = enabled {
                self.metrics.error(e.kind());
                return Err(e);
            }
        }
        Ok(conn)
    }
}

/// Ticks of `interval`, or never when there is none: lets a `select!` branch be switched off.
pub async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A send timer with a random first tick, so thousands of senders do not fire in lockstep.
pub fn jittered_interval(period: Duration) -> Interval {
    let offset = period.mul_f64(rand::random::<f64>());
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    // Open loop: a late sender catches up, so the offered rate stays what was asked.
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    interval
}

/// Runs `make(i)` for every item, at most `concurrency` at a time.
pub async fn for_each_concurrent<F, Fut>(items: Range<u64>, concurrency: usize, make: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for i in items {
        if running.len() >= concurrency.max(1) {
            running.join_next().await;
        }
        running.spawn(make(i));
    }
    while running.join_next().await.is_some() {}
}

/// Pause before a session tries to log in again after a failure.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Waits out the retry delay; `true` if told to stop meanwhile.
pub async fn wait_or_stop(stop: &mut tokio::sync::oneshot::Receiver<()>) -> bool {
    // A stop already received (say, it ended the attempt that failed) must not be
    // polled again: a finished oneshot receiver panics when polled.
    if stop.is_terminated() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(RETRY_DELAY) => false,
        _ = stop => true,
    }
}

/// Ends one online stint of a simulated user: a clean end (it was told to
/// stop) logs out; an error is counted and the retry delay waited out.
/// `true` when the user should stop for good.
pub async fn session_over(
    conn: Connection,
    outcome: Result<(), XmppError>,
    metrics: &Metrics,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> bool {
    match outcome {
        Ok(()) => {
            conn.close().await;
            inc(&metrics.logouts);
            true
        }
        Err(e) => {
            metrics.error(e.kind());
            wait_or_stop(stop).await
        }
    }
}

/// Answers an IQ request from the server as a minimal client would: pings (XEP-0199) and
/// roster pushes get a result, so servers that probe idle clients keep them; anything else
/// is refused.
pub async fn answer_iq(
    conn: &mut Connection,
    iq: &xmppd_protocol::Stanza,
) -> Result<(), XmppError> {
    if !matches!(iq.stanza_type(), Some("get" | "set")) {
        return Ok(());
    }
    let id = xmppd_protocol::xml::escape_attr(iq.id().unwrap_or_default()).into_owned();
    let to = iq
        .from()
        .map(|f| format!(" to='{}'", xmppd_protocol::xml::escape_attr(f)))
        .unwrap_or_default();
    let raw = iq.raw();
    let contains = |ns: &[u8]| raw.windows(ns.len()).any(|w| w == ns);
    // A roster push (RFC 6121 §2.1.6) must be acknowledged like a ping, and so must a
    // blocklist push (XEP-0191 §3.3), sent to a resource that retrieved its blocklist.
    let reply = if contains(b"urn:xmpp:ping")
        || contains(b"jabber:iq:roster")
        || contains(account::NS_BLOCKING.as_bytes())
    {
        format!("<iq type='result' id='{id}'{to}/>")
    } else {
        format!(
            "<iq type='error' id='{id}'{to}><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
        )
    };
    conn.send(reply.as_bytes()).await
}
