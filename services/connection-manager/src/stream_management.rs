//! XEP-0198 Stream Management on a bound client stream, whatever its
//! transport: acks both ways, the stanzas written to the client kept until it
//! acknowledges them, and the resumption of a broken stream's session on
//! this connection-manager.
//!
//! A stream that enabled it holds a [`StreamManagement`] in its
//! [`Bound`]; one that did not holds `None` and pays nothing per stanza.
//! When a resumable stream breaks, its task keeps the session (the
//! [`Bound`]: mailbox, pinned route and this state) for the resumption
//! timeout ([`keep_for_resumption`]); a new stream of the same account that
//! resumes it takes it over through [`Resumptions`]. A session that ends
//! instead returns what its client never acknowledged to the routers that
//! delivered it (their receipts drop with it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use xmppd_protocol::error::{StreamError, StreamErrorCondition};
use xmppd_runtime::config::StreamManagementConfig;

use crate::bound_stream::Bound;
use crate::cluster::{Delivery, Receipt};
use crate::edge::Edge;
use crate::mailbox::CLIENT_QUEUE_LIMITS;

/// Asks the client for an ack.
pub const REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

/// How long a stream resuming a session waits for the task that holds it,
/// which may first have to close that session's old stream.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration, read once (`[stream_management]`).
#[derive(Clone, Debug)]
pub struct Settings {
    pub enabled: bool,
    pub resume_timeout: Duration,
    pub max_resume_timeout: Duration,
    pub ack_request_after_stanzas: u32,
    pub ack_request_after: Duration,
}

impl Settings {
    pub fn from_config(config: &StreamManagementConfig) -> Self {
        Settings {
            enabled: config.enabled,
            resume_timeout: Duration::from_secs(config.resume_timeout_secs),
            max_resume_timeout: Duration::from_secs(config.max_resume_timeout_secs),
            ack_request_after_stanzas: config.ack_request_after_stanzas,
            ack_request_after: Duration::from_millis(config.ack_request_after_ms),
        }
    }

    /// The resumption timeout of a session whose client asked for `max`
    /// seconds, if it did: never more than the configured maximum.
    pub fn resume_timeout(&self, max: Option<u64>) -> Duration {
        max.map_or(self.resume_timeout, Duration::from_secs)
            .min(self.max_resume_timeout)
    }
}

/// The state of one stream's stream management. Counters are XEP-0198's:
/// 32 bits, wrapping.
pub struct StreamManagement {
    /// The id a client resumes this resumable session by; `None`: not resumable.
    pub id: Option<Box<str>>,
    pub resume_timeout: Duration,
    /// Client stanzas handled: the `h` of our acks.
    handled: u32,
    /// The client's last `h`: our stanzas it acknowledged.
    acknowledged: u32,
    /// Stanzas written (or, detached, queued) and not acknowledged, oldest
    /// first, with their routers' receipts, settled as the client
    /// acknowledges them (dropped with this state, they return what the
    /// client never acknowledged): the `Bytes` written, not copies.
    unacked: VecDeque<(Bytes, Receipt)>,
    unacked_bytes: usize,
    /// Stanzas written since we last asked for an ack, and when the first
    /// of them was.
    unrequested: u32,
    unrequested_since: Option<Instant>,
    /// Where a stream resuming this session asks for it ([`Resumptions`]).
    pub takeover: Option<oneshot::Receiver<Takeover>>,
    /// Just resumed: `<resumed/>` and the unacknowledged stanzas are to be
    /// written before anything else.
    pub resumed: bool,
}

/// An `<a h/>` acknowledging more than was sent (XEP-0198 §5).
#[derive(Debug, PartialEq, Eq)]
pub struct HandledCountTooHigh {
    pub h: u32,
    pub send_count: u32,
}

impl HandledCountTooHigh {
    pub fn stream_error(&self) -> StreamError {
        StreamError::new(StreamErrorCondition::UndefinedCondition).with_application(format!(
            "<handled-count-too-high xmlns='urn:xmpp:sm:3' h='{}' send-count='{}'/>",
            self.h, self.send_count
        ))
    }
}

impl StreamManagement {
    pub fn new(id: Option<Box<str>>, resume_timeout: Duration) -> Self {
        StreamManagement {
            id,
            resume_timeout,
            handled: 0,
            acknowledged: 0,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            unrequested: 0,
            unrequested_since: None,
            takeover: None,
            resumed: false,
        }
    }

    /// A stanza from the client was handled.
    pub fn handled_one(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// Client stanzas handled, for `<a h/>` and `<resumed h/>`.
    pub fn handled(&self) -> u32 {
        self.handled
    }

    /// Our answer to `<r/>`.
    pub fn ack(&self) -> String {
        format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", self.handled)
    }

    /// A stanza is being written to the client; whether to ask for an ack
    /// after it.
    pub fn sent(&mut self, payload: Bytes, receipt: Receipt, settings: &Settings) -> bool {
        self.unacked_bytes += payload.len();
        self.unacked.push_back((payload, receipt));
        self.unrequested += 1;
        self.unrequested_since.get_or_insert_with(Instant::now);
        self.unrequested >= settings.ack_request_after_stanzas
    }

    /// We asked for an ack.
    pub fn requested(&mut self) {
        self.unrequested = 0;
        self.unrequested_since = None;
    }

    /// When to ask for an ack of what was written since the last request.
    pub fn request_due(&self, settings: &Settings) -> Option<Instant> {
        self.unrequested_since
            .map(|since| since + settings.ack_request_after)
    }

    /// Stanzas counted as sent: acknowledged ones and those still held.
    pub fn send_count(&self) -> u32 {
        self.acknowledged.wrapping_add(self.unacked.len() as u32)
    }

    /// The client acknowledged our stanzas up to `h`: they are let go.
    pub fn acknowledge(&mut self, h: u32) -> Result<(), HandledCountTooHigh> {
        let newly = h.wrapping_sub(self.acknowledged) as usize;
        if newly > self.unacked.len() {
            return Err(HandledCountTooHigh {
                h,
                send_count: self.send_count(),
            });
        }
        for (payload, receipt) in self.unacked.drain(..newly) {
            self.unacked_bytes -= payload.len();
            receipt.delivered();
        }
        if self.unacked.is_empty() {
            self.unacked = VecDeque::new();
        }
        self.acknowledged = h;
        Ok(())
    }

    /// Whether the client lets more wait for its ack than a client stream
    /// may hold ([`CLIENT_QUEUE_LIMITS`]).
    pub fn over_limit(&self) -> bool {
        self.unacked.len() > CLIENT_QUEUE_LIMITS.stanzas
            || self.unacked_bytes > CLIENT_QUEUE_LIMITS.bytes
    }

    /// The stanzas not acknowledged, oldest first, to write again.
    pub fn unacked(&self) -> impl Iterator<Item = &Bytes> {
        self.unacked.iter().map(|(payload, _)| payload)
    }
}

/// How a stream resuming a session asks the task that holds it for it: the
/// session comes back on this.
pub type Takeover = oneshot::Sender<Bound>;

/// The resumable sessions of this node, by id.
#[derive(Default)]
pub struct Resumptions {
    sessions: Mutex<HashMap<Box<str>, Resumable>>,
}

struct Resumable {
    /// The bare JID whose streams may resume it.
    account: Box<str>,
    takeover: oneshot::Sender<Takeover>,
}

impl Resumptions {
    /// A new session id: 128 random bits, unguessable, then the id of the
    /// node holding the session (URL-safe base64), so that a node that does
    /// not hold it can tell which does. Opaque to clients.
    pub fn new_id(node_id: &str) -> Box<str> {
        let node = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(node_id);
        format!("{:032x}.{node}", rand::random::<u128>()).into()
    }

    /// Makes a session resumable by streams of `account`; a stream resuming
    /// it is announced on the receiver.
    pub fn register(&self, id: &str, account: &str) -> oneshot::Receiver<Takeover> {
        let (takeover, announced) = oneshot::channel();
        self.lock().insert(
            id.into(),
            Resumable {
                account: account.into(),
                takeover,
            },
        );
        announced
    }

    /// The session ended: it can no longer be resumed.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Takes over the session `id` of `account` from the task that holds
    /// it, live or detached; `None` if there is no such session (unknown,
    /// ended, another account's) or it ended meanwhile.
    pub async fn take(&self, id: &str, account: &str) -> Option<Bound> {
        let resumable = {
            let mut sessions = self.lock();
            match sessions.get(id) {
                Some(resumable) if *resumable.account == *account => sessions.remove(id),
                _ => None,
            }
        }?;
        let (reply, session) = oneshot::channel();
        resumable.takeover.send(reply).ok()?;
        tokio::time::timeout(TAKEOVER_TIMEOUT, session)
            .await
            .ok()?
            .ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Resumable>> {
        // Nothing panics while holding the lock.
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What ended a detached session's wait.
enum Detached {
    Taken(Option<Takeover>),
    Delivery(Option<Delivery>),
    Expired,
}

/// Keeps the session of a resumable stream that broke for its resumption
/// timeout: its resource stays bound, with its presence, and what arrives
/// for it is held with the unacknowledged stanzas, to be written when the
/// client resumes. It ends (`Bound`'s drop hands everything held back to the
/// router, then the resource is unbound) when the time is up, when more is
/// held than a client stream may hold, or when its mailbox is closed
/// (shutdown, the resource bound elsewhere, its router gone).
pub async fn keep_for_resumption(edge: &Edge, mut bound: Bound) {
    let Some(timeout) = bound.sm.as_deref().map(|sm| sm.resume_timeout) else {
        return;
    };
    let deadline = Instant::now() + timeout;
    loop {
        let Some(sm) = bound.sm.as_deref_mut() else {
            return;
        };
        let Some(takeover) = sm.takeover.as_mut() else {
            return;
        };
        let detached = tokio::select! {
            taken = takeover => Detached::Taken(taken.ok()),
            delivery = bound.mailbox.recv() => Detached::Delivery(delivery),
            _ = tokio::time::sleep_until(deadline) => Detached::Expired,
        };
        match detached {
            Detached::Taken(Some(reply)) => {
                // Refused (the resuming stream gave up): the session ends.
                let _ = reply.send(bound);
                return;
            }
            Detached::Delivery(Some(Delivery::Stanza {
                payload, receipt, ..
            })) => {
                sm.sent(payload, receipt, &edge.settings().stream_management);
                if sm.over_limit() {
                    tracing::info!(full_jid = %bound.full, "too much held for a detached session, ending it");
                    return;
                }
            }
            Detached::Expired => {
                edge.metrics.stream_management("expired");
                return;
            }
            Detached::Taken(None) | Detached::Delivery(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::from_config(&StreamManagementConfig::default())
    }

    fn stanza(n: usize) -> Bytes {
        Bytes::from(format!("<message id='{n}'/>"))
    }

    fn ids(sm: &StreamManagement) -> Vec<String> {
        sm.unacked()
            .map(|payload| String::from_utf8_lossy(payload).into_owned())
            .collect()
    }

    #[test]
    fn acks_let_go_of_what_they_acknowledge() {
        let mut sm = StreamManagement::new(None, Duration::ZERO);
        for n in 0..3 {
            sm.sent(stanza(n), Receipt::NONE, &settings());
        }
        sm.acknowledge(2).unwrap();
        assert_eq!(ids(&sm), ["<message id='2'/>"]);
        assert_eq!(sm.send_count(), 3);
        // The same h again acknowledges nothing new.
        sm.acknowledge(2).unwrap();
        assert_eq!(ids(&sm).len(), 1);
    }

    #[test]
    fn an_ack_of_more_than_was_sent_is_refused() {
        let mut sm = StreamManagement::new(None, Duration::ZERO);
        sm.sent(stanza(0), Receipt::NONE, &settings());
        let error = sm.acknowledge(2).unwrap_err();
        assert_eq!(
            error,
            HandledCountTooHigh {
                h: 2,
                send_count: 1
            }
        );
        let xml = error.stream_error().to_xml();
        assert!(xml.contains("<undefined-condition"), "{xml}");
        assert!(
            xml.contains("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='2' send-count='1'/>"),
            "{xml}"
        );
    }

    #[test]
    fn counters_wrap_at_32_bits() {
        let mut sm = StreamManagement::new(None, Duration::ZERO);
        sm.acknowledged = u32::MAX - 1;
        sm.handled = u32::MAX;
        sm.handled_one();
        assert_eq!(sm.handled(), 0);
        for n in 0..4 {
            sm.sent(stanza(n), Receipt::NONE, &settings());
        }
        // Sent: MAX-1 acknowledged, then 4 more: MAX, 0, 1, 2.
        assert_eq!(sm.send_count(), 2);
        sm.acknowledge(0).unwrap();
        assert_eq!(ids(&sm), ["<message id='2'/>", "<message id='3'/>"]);
        assert_eq!(
            sm.acknowledge(3),
            Err(HandledCountTooHigh {
                h: 3,
                send_count: 2
            })
        );
        sm.acknowledge(2).unwrap();
        assert_eq!(ids(&sm).len(), 0);
    }

    #[test]
    fn acks_are_asked_for_every_so_many_stanzas() {
        let settings = settings();
        let mut sm = StreamManagement::new(None, Duration::ZERO);
        assert_eq!(sm.request_due(&settings), None);
        let asks: Vec<bool> = (0..settings.ack_request_after_stanzas)
            .map(|n| sm.sent(stanza(n as usize), Receipt::NONE, &settings))
            .collect();
        assert_eq!(asks.iter().filter(|ask| **ask).count(), 1);
        assert!(asks.last().unwrap());
        assert!(sm.request_due(&settings).is_some());
        sm.requested();
        assert_eq!(sm.request_due(&settings), None);
    }

    #[test]
    fn the_unacked_queue_is_bounded_in_stanzas_and_bytes() {
        let mut sm = StreamManagement::new(None, Duration::ZERO);
        for n in 0..CLIENT_QUEUE_LIMITS.stanzas {
            sm.sent(stanza(n), Receipt::NONE, &settings());
        }
        assert!(!sm.over_limit());
        sm.sent(stanza(0), Receipt::NONE, &settings());
        assert!(sm.over_limit());
        sm.acknowledge(CLIENT_QUEUE_LIMITS.stanzas as u32 + 1)
            .unwrap();
        assert!(!sm.over_limit());
        let big = Bytes::from(vec![b'x'; CLIENT_QUEUE_LIMITS.bytes / 2]);
        sm.sent(big.clone(), Receipt::NONE, &settings());
        sm.sent(big, Receipt::NONE, &settings());
        assert!(!sm.over_limit());
        sm.sent(stanza(0), Receipt::NONE, &settings());
        assert!(sm.over_limit());
    }

    #[test]
    fn a_client_asks_for_a_resumption_timeout_up_to_the_maximum() {
        let settings = settings();
        assert_eq!(settings.resume_timeout(None), Duration::from_secs(300));
        assert_eq!(settings.resume_timeout(Some(60)), Duration::from_secs(60));
        assert_eq!(
            settings.resume_timeout(Some(86_400)),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn session_ids_are_random_and_name_their_node() {
        let a = Resumptions::new_id("cm-1");
        let b = Resumptions::new_id("cm-1");
        assert_ne!(a, b);
        let (random, node) = a.split_once('.').unwrap();
        assert_eq!(random.len(), 32);
        let node = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(node)
            .unwrap();
        assert_eq!(node, b"cm-1");
    }
}
