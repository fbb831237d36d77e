//! `muc`: rooms of K occupants (XEP-0045). User `i` joins room `i / K` of this worker's users;
//! the first occupant creates the room (configured as an instant room) and the others join
//! once it is open. Then every occupant sends group chat at a fixed total rate, and each
//! message fans out to the K occupants (the sender's own copy included, since the server does
//! that work too).
//!
//! Phases: `join` (until every occupant is in, or the timeout), `steady`, `ramp-down`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use xmppd_protocol::Stanza;

use crate::connection::{Connection, XmppError, stanza_error_condition};
use crate::metrics::{IN_BODY, inc, now_us, read_stamp, stamp_body};
use crate::recorder::{Goal, Recorder};
use crate::scenario::{Env, answer_iq, jittered_interval, session_over, tick, wait_or_stop};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// How often a joiner checks whether its room's creator has opened the room.
const READY_CHECK: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct MucParams {
    pub occupants: u64,
    /// The MUC service's domain, e.g. `conference.localhost`.
    pub service: String,
    /// Group chat messages per second over the whole population (before fan-out).
    pub rate: f64,
    pub login_rate: f64,
    pub duration: Duration,
    pub join_timeout: Duration,
}

struct Shared {
    env: Arc<Env>,
    params: MucParams,
    base: u64,
    /// Per room: created and configured, so others may join.
    ready: Box<[AtomicBool]>,
    joined: AtomicU64,
}

impl Shared {
    fn room(&self, i: u64) -> usize {
        ((i - self.base) / self.params.occupants) as usize
    }

    fn room_jid(&self, i: u64) -> String {
        format!(
            "loadtest-room{}@{}",
            i / self.params.occupants,
            self.params.service
        )
    }
}

pub async fn run(env: Arc<Env>, recorder: &mut Recorder, params: MucParams) {
    let users = env.slice(params.occupants);
    let n = users.end - users.start;
    if n == 0 {
        return;
    }
    // One message per `interval` from each occupant makes `rate` over the population.
    let interval = Duration::from_secs_f64(env.population.users as f64 / params.rate);
    let shared = Arc::new(Shared {
        ready: (0..n / params.occupants)
            .map(|_| AtomicBool::new(false))
            .collect(),
        env: env.clone(),
        params: params.clone(),
        base: users.start,
        joined: AtomicU64::new(0),
    });
    let (chatting, _) = watch::channel(false);
    recorder.begin(
        "join",
        Goal::Count {
            total: n,
            done: |c| c.logins,
        },
    );
    let mut sessions = Vec::with_capacity(n as usize);
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / params.login_rate));
    for i in users {
        pace.tick().await;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(occupant(
            shared.clone(),
            i,
            interval,
            chatting.subscribe(),
            stopped,
        ));
        sessions.push((stop, task));
    }
    let deadline = tokio::time::Instant::now() + params.join_timeout;
    while shared.joined.load(Ordering::Relaxed) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recorder.begin("steady", Goal::Time(params.duration));
    chatting.send_replace(true);
    tokio::time::sleep(params.duration).await;
    chatting.send_replace(false);
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

async fn occupant(
    shared: Arc<Shared>,
    i: u64,
    interval: Duration,
    mut chatting: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let metrics = shared.env.metrics.clone();
    let mut seq = 0;
    let mut counted = false;
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
        let outcome = async {
            join(&shared, i, &mut conn, &mut stop).await?;
            if !std::mem::replace(&mut counted, true) {
                shared.joined.fetch_add(1, Ordering::Relaxed);
            }
            converse(
                &shared,
                i,
                &mut conn,
                interval,
                &mut seq,
                &mut chatting,
                &mut stop,
            )
            .await
        }
        .await;
        metrics.online.fetch_sub(1, Ordering::Relaxed);
        if session_over(conn, outcome, &metrics, &mut stop).await {
            return;
        }
    }
}

/// Joins the room (creating it if this is its first occupant) and waits for our own
/// presence to come back, which says we are in.
async fn join(
    shared: &Shared,
    i: u64,
    conn: &mut Connection,
    stop: &mut oneshot::Receiver<()>,
) -> Result<(), XmppError> {
    let room = shared.room(i);
    let creator = (i - shared.base).is_multiple_of(shared.params.occupants);
    while !creator && !shared.ready[room].load(Ordering::Relaxed) {
        tokio::select! {
            _ = tokio::time::sleep(READY_CHECK) => {}
            _ = &mut *stop => return Err(XmppError::Negotiation("stopped-before-join")),
        }
    }
    let room_jid = shared.room_jid(i);
    let me = format!("{room_jid}/u{i}");
    let presence =
        format!("<presence to='{me}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>");
    conn.send(presence.as_bytes()).await?;
    loop {
        let stanza = tokio::time::timeout(shared.params.join_timeout, conn.next_stanza())
            .await
            .map_err(|_| XmppError::Timeout("muc-join"))??;
        if stanza.name() != "presence" || stanza.from() != Some(me.as_str()) {
            continue;
        }
        if stanza.stanza_type() == Some("error") {
            return Err(XmppError::Iq {
                step: "muc-join",
                condition: stanza_error_condition(&stanza),
            });
        }
        if has_status(&stanza, "201") {
            // A new room stays locked until its owner configures it; accept the defaults.
            let config = format!(
                "<iq type='set' id='cfg' to='{room_jid}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'/></query></iq>"
            );
            conn.iq("muc-config", &config).await?;
        }
        shared.ready[room].store(true, Ordering::Relaxed);
        return Ok(());
    }
}

fn has_status(stanza: &Stanza, code: &str) -> bool {
    let raw = stanza.raw();
    [format!("code='{code}'"), format!("code=\"{code}\"")]
        .iter()
        .any(|needle| raw.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

async fn converse(
    shared: &Shared,
    i: u64,
    conn: &mut Connection,
    interval: Duration,
    seq: &mut u64,
    chatting: &mut watch::Receiver<bool>,
    stop: &mut oneshot::Receiver<()>,
) -> Result<(), XmppError> {
    let metrics = &shared.env.metrics;
    let room_jid = shared.room_jid(i);
    let mut timer = chatting
        .borrow_and_update()
        .then(|| jittered_interval(interval));
    loop {
        tokio::select! {
            _ = &mut *stop => return Ok(()),
            changed = chatting.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                timer = chatting.borrow_and_update().then(|| jittered_interval(interval));
            }
            _ = tick(&mut timer) => {
                // A tick may win the race against a pending stop of the chatting.
                if chatting.has_changed().unwrap_or(true) {
                    continue;
                }
                let message = format!(
                    "<message to='{room_jid}' type='groupchat'><body>{}</body></message>",
                    stamp_body(*seq)
                );
                *seq += 1;
                conn.send(message.as_bytes()).await?;
                inc(&metrics.messages_sent);
            }
            stanza = conn.next_stanza() => {
                let stanza = stanza?;
                match (stanza.name(), stanza.stanza_type()) {
                    ("message", Some("error")) => {
                        metrics.error(format!("message-error:{}", stanza_error_condition(&stanza)));
                    }
                    ("message", _) => {
                        if let Some(stamp) = read_stamp(stanza.raw(), IN_BODY) {
                            inc(&metrics.messages_delivered);
                            metrics.record_delivery(now_us().saturating_sub(stamp.sent_us));
                        }
                    }
                    ("presence", _) => inc(&metrics.presences_delivered),
                    ("iq", _) => answer_iq(conn, &stanza).await?,
                    _ => {}
                }
            }
        }
    }
}
