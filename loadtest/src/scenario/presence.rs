//! `presence`: every user gets a roster of R contacts (its R/2 neighbours on each side of a
//! ring over this worker's users) with mutual subscriptions, made by the real handshake;
//! then users log out and back in at random (churn), so every login and logout fans out to
//! the contacts online. A run on accounts that already have those rosters skips the
//! handshake for contacts already at `both`.
//!
//! Phases: `rosters` (log in, subscribe, until every roster is complete), `churn`, and
//! `ramp-down`. Every presence carries a stamp in `<status>`; a receiver measures the
//! latency of those sent after it came online (answers to its own probes are older).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use xmppd_protocol::Stanza;

use crate::connection::{Connection, XmppError};
use crate::metrics::{IN_STATUS, inc, now_us, read_stamp, stamp_body};
use crate::recorder::{Goal, Recorder};
use crate::scenario::{Env, answer_iq, wait_or_stop};

const NS_ROSTER: &str = "jabber:iq:roster";

#[derive(Clone, Copy, Debug)]
pub struct PresenceParams {
    /// Contacts per user (rounded down to even: half on each side of the ring).
    pub contacts: u64,
    /// Logins per second while the users first come online.
    pub login_rate: f64,
    /// Logouts (each followed by a login) per second over this worker's users.
    pub churn_rate: f64,
    pub duration: Duration,
    /// Limit for the roster handshake phase.
    pub setup_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Setup,
    /// Each online session logs out after a random time of this mean.
    Churn(Duration),
}

struct Shared {
    env: Arc<Env>,
    users: std::ops::Range<u64>,
    half: u64,
    /// Users whose roster holds all their contacts at `both`.
    complete: AtomicU64,
}

impl Shared {
    fn contacts(&self, i: u64) -> impl Iterator<Item = u64> + '_ {
        let n = self.users.end - self.users.start;
        let local = i - self.users.start;
        (1..=self.half)
            .flat_map(move |d| [(local + d) % n, (local + n - d) % n].map(|l| self.users.start + l))
    }

    /// Contacts this user sends the first `subscribe` to; the others send theirs to it.
    fn forward(&self, i: u64) -> impl Iterator<Item = u64> + '_ {
        let n = self.users.end - self.users.start;
        let local = i - self.users.start;
        (1..=self.half).map(move |d| self.users.start + (local + d) % n)
    }
}

pub async fn run(env: Arc<Env>, recorder: &mut Recorder, params: PresenceParams) {
    let users = env.slice(1);
    let n = users.end - users.start;
    let half = (params.contacts / 2).min(n.saturating_sub(1) / 2);
    if n == 0 {
        return;
    }
    let shared = Arc::new(Shared {
        env: env.clone(),
        users: users.clone(),
        half,
        complete: AtomicU64::new(0),
    });
    let (mode_tx, _) = watch::channel(Mode::Setup);
    recorder.begin(
        "rosters",
        Goal::Count {
            total: n,
            done: |c| c.logins,
        },
    );
    let mut sessions = Vec::with_capacity(n as usize);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / params.login_rate));
    for i in users.clone() {
        pace.tick().await;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(member(shared.clone(), i, mode_tx.subscribe(), stopped));
        sessions.push((stop, task));
    }
    let deadline = tokio::time::Instant::now() + params.setup_timeout;
    while shared.complete.load(Ordering::Relaxed) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let incomplete = n - shared.complete.load(Ordering::Relaxed);
    for _ in 0..incomplete {
        env.metrics.error("roster-setup:incomplete".into());
    }
    recorder.begin("churn", Goal::Time(params.duration));
    // Each of the n sessions leaves after a mean of n / rate seconds: rate logouts/s in all.
    let mean = Duration::from_secs_f64(n as f64 / params.churn_rate);
    mode_tx.send_replace(Mode::Churn(mean));
    tokio::time::sleep(params.duration).await;
    recorder.begin("ramp-down", Goal::Open);
    let (stops, tasks): (Vec<_>, Vec<_>) = sessions.into_iter().unzip();
    for stop in stops {
        let _ = stop.send(());
    }
    for task in tasks {
        let _ = task.await;
    }
    recorder.end();
}

/// Per-session roster state during the handshake.
#[derive(Default)]
struct RosterState {
    /// Contacts at `both`.
    both: HashSet<u64>,
    /// Contacts we sent `subscribe` to.
    asked: HashSet<u64>,
    reported_complete: bool,
}

async fn member(
    shared: Arc<Shared>,
    i: u64,
    mut mode: watch::Receiver<Mode>,
    mut stop: oneshot::Receiver<()>,
) {
    let metrics = shared.env.metrics.clone();
    let mut roster = RosterState::default();
    loop {
        let login = tokio::select! {
            login = shared.env.login(i) => login,
            _ = &mut stop => return,
        };
        let Ok(mut conn) = login else {
            if wait_or_stop(&mut stop).await {
                return;
            }
            continue;
        };
        metrics.online.fetch_add(1, Ordering::Relaxed);
        let outcome = online(&shared, i, &mut conn, &mut roster, &mut mode, &mut stop).await;
        metrics.online.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Ok(Leave::Stop) => {
                conn.close().await;
                inc(&metrics.logouts);
                return;
            }
            Ok(Leave::Churn) => {
                conn.close().await;
                inc(&metrics.logouts);
            }
            Err(e) => {
                metrics.error(e.kind());
                if wait_or_stop(&mut stop).await {
                    return;
                }
            }
        }
    }
}

enum Leave {
    Stop,
    Churn,
}

async fn online(
    shared: &Shared,
    i: u64,
    conn: &mut Connection,
    roster: &mut RosterState,
    mode: &mut watch::Receiver<Mode>,
    stop: &mut oneshot::Receiver<()>,
) -> Result<Leave, XmppError> {
    let setup = *mode.borrow_and_update() == Mode::Setup && !roster.reported_complete;
    if setup {
        let reply = conn
            .iq(
                "roster",
                &format!("<iq type='get' id='roster'><query xmlns='{NS_ROSTER}'/></iq>"),
            )
            .await?;
        read_roster_items(shared, &reply, roster);
    }
    let since = now_us();
    conn.send(format!("<presence><status>{}</status></presence>", stamp_body(0)).as_bytes())
        .await?;
    if setup {
        for j in shared.forward(i) {
            if !roster.both.contains(&j) {
                subscribe(shared, conn, j, roster).await?;
            }
        }
        check_complete(shared, i, roster);
    }
    let mut leave_at = churn_timer(*mode.borrow());
    // Presence latency is measured in churn only: during set-up a contact's presence
    // arrives when the handshake completes, long after it was sent.
    let mut measure = leave_at.is_some();
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(Leave::Stop),
            changed = mode.changed() => {
                if changed.is_err() {
                    return Ok(Leave::Stop);
                }
                leave_at = churn_timer(*mode.borrow_and_update());
                measure = leave_at.is_some();
            }
            _ = sleep_until(leave_at) => {
                let bye = format!("<presence type='unavailable'><status>{}</status></presence>", stamp_body(0));
                conn.send(bye.as_bytes()).await?;
                return Ok(Leave::Churn);
            }
            stanza = conn.next_stanza() => {
                let stanza = stanza?;
                match stanza.name() {
                    "presence" => {
                        let since = measure.then_some(since);
                        on_presence(shared, i, conn, &stanza, roster, since).await?;
                    }
                    "iq" => {
                        if stanza.stanza_type() == Some("set") {
                            read_roster_items(shared, &stanza, roster);
                            check_complete(shared, i, roster);
                        }
                        answer_iq(conn, &stanza).await?;
                    }
                    _ => {}
                }
            }
        }
    }
}

fn churn_timer(mode: Mode) -> Option<tokio::time::Instant> {
    match mode {
        Mode::Setup => None,
        Mode::Churn(mean) => {
            // Exponential stay: logouts form a Poisson process at the requested rate.
            let u: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
            Some(tokio::time::Instant::now() + mean.mul_f64(-u.ln()))
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn on_presence(
    shared: &Shared,
    i: u64,
    conn: &mut Connection,
    stanza: &Stanza,
    roster: &mut RosterState,
    since: Option<u64>,
) -> Result<(), XmppError> {
    let accounts = &shared.env.accounts;
    let Some(from) = stanza.from().and_then(|f| accounts.index_of(f)) else {
        return Ok(());
    };
    if from == i {
        return Ok(());
    }
    match stanza.stanza_type() {
        None | Some("unavailable") => {
            let metrics = &shared.env.metrics;
            inc(&metrics.presences_delivered);
            if let Some(since) = since
                && let Some(stamp) = read_stamp(stanza.raw(), IN_STATUS)
                && stamp.sent_us >= since
            {
                metrics.record_delivery(now_us().saturating_sub(stamp.sent_us));
            }
        }
        Some("subscribe") => {
            let to = accounts.bare_jid(from);
            conn.send(format!("<presence type='subscribed' to='{to}'/>").as_bytes())
                .await?;
            if !roster.both.contains(&from) && !roster.asked.contains(&from) {
                subscribe(shared, conn, from, roster).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Asks `j` for its presence and pre-approves its request for ours: whichever side comes
/// first, both end at `both`.
async fn subscribe(
    shared: &Shared,
    conn: &mut Connection,
    j: u64,
    roster: &mut RosterState,
) -> Result<(), XmppError> {
    let to = shared.env.accounts.bare_jid(j);
    for kind in ["subscribe", "subscribed"] {
        conn.send(format!("<presence type='{kind}' to='{to}'/>").as_bytes())
            .await?;
    }
    roster.asked.insert(j);
    Ok(())
}

/// Reads the items of a roster result or push into `roster.both` (a DOM, during set-up only).
fn read_roster_items(shared: &Shared, stanza: &Stanza, roster: &mut RosterState) {
    let Ok(element) = stanza.element() else {
        return;
    };
    let Some(query) = element.get_child("query", NS_ROSTER) else {
        return;
    };
    for item in query.children().filter(|c| c.name() == "item") {
        let Some(j) = item
            .get_attr("jid")
            .and_then(|jid| shared.env.accounts.index_of(jid))
        else {
            continue;
        };
        if item.get_attr("subscription") == Some("both") {
            roster.both.insert(j);
        } else {
            roster.both.remove(&j);
        }
    }
}

fn check_complete(shared: &Shared, i: u64, roster: &mut RosterState) {
    if !roster.reported_complete && shared.contacts(i).all(|j| roster.both.contains(&j)) {
        roster.reported_complete = true;
        shared.complete.fetch_add(1, Ordering::Relaxed);
    }
}
