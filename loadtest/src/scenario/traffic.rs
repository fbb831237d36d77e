//! The phase engine behind `idle`, `chat` and `run`: users log in and out at a rate toward
//! each phase's target, and while online either stay idle or chat with their pair partner
//! (user `2k` with `2k+1`), one task per session.
//!
//! Chat is either open loop (every online user sends at a fixed interval, so the offered rate
//! does not depend on the server) or closed loop (each pair keeps `window` messages bouncing:
//! a receipt triggers the next message, so the server's pace sets the rate). Every message
//! carries its sequence number and send time, and the receiver measures the delivery latency
//! and notices gaps and reordering.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Interval;

use crate::connection::{Connection, XmppError};
use crate::metrics::{IN_BODY, SeqCheck, inc, now_us, read_stamp, stamp_body};
use crate::recorder::{Goal, Recorder};
use crate::scenario::plan::{Activity, PhaseSpec, Plan};
use crate::scenario::{Env, answer_iq, jittered_interval, session_over, tick, wait_or_stop};

/// How often an idle closed-loop initiator checks whether its partner is online yet.
const SEED_CHECK: Duration = Duration::from_millis(50);

/// What online sessions do, as told by the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Idle,
    /// Each user sends one message per interval.
    Open(Duration),
    /// Each pair keeps `window` messages in flight.
    Closed,
}

impl Mode {
    fn of(phase: &PhaseSpec, plan: &Plan) -> Mode {
        let rate = phase
            .message_rate
            .or((plan.chat.rate > 0.0).then_some(plan.chat.rate));
        match (phase.activity, rate) {
            (Activity::Idle, _) => Mode::Idle,
            (Activity::Chat, None) => Mode::Closed,
            (Activity::Chat, Some(_)) if phase.users == 0 => Mode::Idle,
            // The rate is over the whole population, so each user's share is the same in
            // every worker.
            (Activity::Chat, Some(rate)) => {
                Mode::Open(Duration::from_secs_f64(phase.users as f64 / rate))
            }
        }
    }
}

/// What the session tasks share.
struct Shared {
    env: Arc<Env>,
    /// Index of this worker's first user.
    base: u64,
    /// Whether each of this worker's users is logged in: senders wait for their partner.
    online: Box<[AtomicBool]>,
    /// Sessions that finished their first login attempt, either way; a ramp is over when
    /// every session it started has settled.
    settled: AtomicU64,
    presence: bool,
    window: u32,
}

impl Shared {
    fn is_online(&self, i: u64) -> bool {
        self.online[(i - self.base) as usize].load(Ordering::Relaxed)
    }

    fn set_online(&self, i: u64, online: bool) {
        self.online[(i - self.base) as usize].store(online, Ordering::Relaxed);
        let gauge = &self.env.metrics.online;
        if online {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A running session and the way to end it.
struct Slot {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

pub async fn run(env: Arc<Env>, recorder: &mut Recorder, plan: &Plan) {
    let users = env.slice(2);
    let local = (users.end - users.start) as usize;
    // This worker's part of every population-wide figure (targets and join rates).
    let share = local as f64 / plan.users as f64;
    let shared = Arc::new(Shared {
        env: env.clone(),
        base: users.start,
        online: (0..local).map(|_| AtomicBool::new(false)).collect(),
        settled: AtomicU64::new(0),
        presence: plan.presence,
        window: plan.chat.window,
    });
    let (mode_tx, _) = watch::channel(Mode::Idle);
    let mut slots: Vec<Slot> = Vec::with_capacity(local);
    let mut started = 0u64;
    let mut stopping: Vec<JoinHandle<()>> = Vec::new();
    for phase in &plan.phases {
        let target = ((phase.users as f64 * share).round() as usize).min(local);
        recorder.begin(&phase.name, phase.duration.map_or(Goal::Open, Goal::Time));
        mode_tx.send_replace(Mode::of(phase, plan));
        let start = Instant::now();
        let from = slots.len();
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        loop {
            pace.tick().await;
            let elapsed = start.elapsed();
            let allowed = phase.join_rate.map_or(usize::MAX, |rate| {
                (rate * share * elapsed.as_secs_f64()).floor() as usize + 1
            });
            let mut budget = allowed.saturating_sub(slots.len().abs_diff(from));
            while budget > 0 && slots.len() < target {
                let i = users.start + slots.len() as u64;
                let (stop, stopped) = oneshot::channel();
                let task = tokio::spawn(session(shared.clone(), i, mode_tx.subscribe(), stopped));
                slots.push(Slot { stop, task });
                started += 1;
                budget -= 1;
            }
            // Leave in reverse order of joining, so pairs leave together.
            while budget > 0 && slots.len() > target {
                let slot = slots.pop().expect("more slots than the target");
                let _ = slot.stop.send(());
                stopping.push(slot.task);
                budget -= 1;
            }
            let done = match phase.duration {
                Some(limit) => elapsed >= limit || (phase.until_drained && drained(&env)),
                None => slots.len() == target && shared.settled.load(Ordering::Relaxed) >= started,
            };
            if done {
                break;
            }
        }
        if phase.duration.is_none() {
            // A ramp-down is over when its sessions have logged out.
            for task in stopping.drain(..) {
                let _ = task.await;
            }
        }
        stopping.retain(|t| !t.is_finished());
    }
    recorder.end();
    for slot in slots {
        let _ = slot.stop.send(());
        stopping.push(slot.task);
    }
    for task in stopping {
        let _ = task.await;
    }
}

fn drained(env: &Env) -> bool {
    let c = env.metrics.counters();
    c.messages_delivered >= c.messages_sent
}

/// One user: log in (again after a failure), then converse until told to stop.
async fn session(
    shared: Arc<Shared>,
    i: u64,
    mut mode: watch::Receiver<Mode>,
    mut stop: oneshot::Receiver<()>,
) {
    let metrics = shared.env.metrics.clone();
    let mut peer = Peer {
        partner: i ^ 1,
        partner_jid: shared.env.full_jid(i ^ 1),
        initiator: i.is_multiple_of(2),
        seq: 0,
        check: SeqCheck::default(),
    };
    let mut first = true;
    loop {
        let login = tokio::select! {
            login = shared.env.login(i) => login,
            _ = &mut stop => return,
        };
        let mut conn = match login {
            Ok(conn) => conn,
            Err(_) => {
                settle(&shared, &mut first);
                if wait_or_stop(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        shared.set_online(i, true);
        settle(&shared, &mut first);
        let outcome = converse(&shared, &mut conn, &mut peer, &mut mode, &mut stop).await;
        shared.set_online(i, false);
        if session_over(conn, outcome, &metrics, &mut stop).await {
            return;
        }
    }
}

fn settle(shared: &Shared, first: &mut bool) {
    if std::mem::take(first) {
        shared.settled.fetch_add(1, Ordering::Relaxed);
    }
}

/// A user's side of its pair.
struct Peer {
    partner: u64,
    partner_jid: String,
    /// The even user of a pair starts the closed loop.
    initiator: bool,
    /// Next sequence number to send; kept across reconnections.
    seq: u64,
    check: SeqCheck,
}

impl Peer {
    async fn send(&mut self, conn: &mut Connection, shared: &Shared) -> Result<(), XmppError> {
        let message = format!(
            "<message to='{}' type='chat'><body>{}</body></message>",
            self.partner_jid,
            stamp_body(self.seq)
        );
        self.seq += 1;
        conn.send(message.as_bytes()).await?;
        inc(&shared.env.metrics.messages_sent);
        Ok(())
    }

    fn timer(&self, mode: Mode) -> Option<Interval> {
        match mode {
            Mode::Idle => None,
            Mode::Open(period) => Some(jittered_interval(period)),
            Mode::Closed if self.initiator => Some(tokio::time::interval(SEED_CHECK)),
            Mode::Closed => None,
        }
    }
}

async fn converse(
    shared: &Shared,
    conn: &mut Connection,
    peer: &mut Peer,
    mode: &mut watch::Receiver<Mode>,
    stop: &mut oneshot::Receiver<()>,
) -> Result<(), XmppError> {
    let metrics = &shared.env.metrics;
    if shared.presence {
        conn.send(b"<presence/>").await?;
    }
    let mut current = *mode.borrow_and_update();
    let mut timer = peer.timer(current);
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(()),
            changed = mode.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                current = *mode.borrow_and_update();
                timer = peer.timer(current);
            }
            stanza = conn.next_stanza() => {
                let stanza = stanza?;
                match stanza.name() {
                    "message" if stanza.stanza_type() == Some("error") => {
                        metrics.error(format!(
                            "message-error:{}",
                            crate::connection::stanza_error_condition(&stanza)
                        ));
                    }
                    "message" => {
                        let Some(stamp) = read_stamp(stanza.raw(), IN_BODY) else { continue };
                        inc(&metrics.messages_delivered);
                        metrics.record_delivery(now_us().saturating_sub(stamp.sent_us));
                        peer.check.observe(stamp.seq, metrics);
                        if current == Mode::Closed {
                            peer.send(conn, shared).await?;
                        }
                    }
                    "iq" => answer_iq(conn, &stanza).await?,
                    _ => {}
                }
            }
            _ = tick(&mut timer) => {
                // `select!` picks among ready branches at random: a tick may win over a
                // pending mode change, which must take effect first.
                if mode.has_changed().unwrap_or(true) || !shared.is_online(peer.partner) {
                    continue;
                }
                if current == Mode::Closed {
                    // Seed the loop once; receipts keep it going from here.
                    timer = None;
                    for _ in 0..shared.window {
                        peer.send(conn, shared).await?;
                    }
                } else {
                    peer.send(conn, shared).await?;
                }
            }
        }
    }
}
