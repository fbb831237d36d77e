//! Live measurements shared by every session task: monotonic counters, errors by kind and two
//! latency histograms. A phase is the difference between two snapshots, so counters never
//! reset and the Prometheus endpoint sees plain monotonic counters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, up to an hour, with 3 significant digits.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Wall-clock microseconds, the timestamp carried in messages: the receiver may be another
/// process on the same machine, so a process-local `Instant` would not do.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Event counts. The same struct is a live snapshot and a phase's delta in the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub logins: u64,
    pub login_failures: u64,
    pub logouts: u64,
    pub accounts_created: u64,
    pub accounts_existed: u64,
    /// Messages (chat or groupchat) sent by the simulated users.
    pub messages_sent: u64,
    /// Messages received; for MUC one per occupant, the sender's own echo included.
    pub messages_delivered: u64,
    /// Messages whose sequence number was lower than one already seen from that sender.
    pub messages_reordered: u64,
    /// Gaps in a sender's sequence: messages skipped (possibly lost, possibly late).
    pub messages_skipped: u64,
    /// Presence stanzas from other users received (fan-out, probe answers included).
    pub presences_delivered: u64,
}

impl Counters {
    fn fields_mut(&mut self) -> [&mut u64; 10] {
        [
            &mut self.logins,
            &mut self.login_failures,
            &mut self.logouts,
            &mut self.accounts_created,
            &mut self.accounts_existed,
            &mut self.messages_sent,
            &mut self.messages_delivered,
            &mut self.messages_reordered,
            &mut self.messages_skipped,
            &mut self.presences_delivered,
        ]
    }

    pub fn add(&mut self, other: &Counters) {
        let mut other = *other;
        for (a, b) in self.fields_mut().into_iter().zip(other.fields_mut()) {
            *a += *b;
        }
    }

    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = *self;
        let mut earlier = *earlier;
        for (a, b) in out.fields_mut().into_iter().zip(earlier.fields_mut()) {
            *a = a.saturating_sub(*b);
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub logouts: AtomicU64,
    pub accounts_created: AtomicU64,
    pub accounts_existed: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_delivered: AtomicU64,
    pub messages_reordered: AtomicU64,
    pub messages_skipped: AtomicU64,
    pub presences_delivered: AtomicU64,
    /// Sessions logged in right now.
    pub online: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Connect to bound resource, µs. Locked per sample: uncontended on the default
    /// single-threaded runtime, and cheap next to the socket work around it.
    login_latency: Mutex<Option<Histogram<u64>>>,
    /// Send timestamp to receipt, µs.
    delivery_latency: Mutex<Option<Histogram<u64>>>,
}

pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn error(&self, kind: String) {
        *self.errors.lock().expect("errors").entry(kind).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors").clone()
    }

    pub fn error_total(&self) -> u64 {
        self.errors.lock().expect("errors").values().sum()
    }

    pub fn record_login(&self, micros: u64) {
        record(&self.login_latency, micros);
    }

    pub fn record_delivery(&self, micros: u64) {
        record(&self.delivery_latency, micros);
    }

    /// Takes the histograms gathered since the last call, leaving empty ones.
    pub fn take_histograms(&self) -> (Histogram<u64>, Histogram<u64>) {
        (take(&self.login_latency), take(&self.delivery_latency))
    }

    pub fn online(&self) -> u64 {
        self.online.load(Ordering::Relaxed)
    }

    pub fn counters(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            logins: get(&self.logins),
            login_failures: get(&self.login_failures),
            logouts: get(&self.logouts),
            accounts_created: get(&self.accounts_created),
            accounts_existed: get(&self.accounts_existed),
            messages_sent: get(&self.messages_sent),
            messages_delivered: get(&self.messages_delivered),
            messages_reordered: get(&self.messages_reordered),
            messages_skipped: get(&self.messages_skipped),
            presences_delivered: get(&self.presences_delivered),
        }
    }
}

fn record(slot: &Mutex<Option<Histogram<u64>>>, micros: u64) {
    slot.lock()
        .expect("histogram")
        .get_or_insert_with(new_histogram)
        .saturating_record(micros.max(1));
}

fn take(slot: &Mutex<Option<Histogram<u64>>>) -> Histogram<u64> {
    slot.lock()
        .expect("histogram")
        .take()
        .unwrap_or_else(new_histogram)
}

/// What a receiver learns from a message body `"<seq> <timestamp-µs>"`.
#[derive(Debug, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub sent_us: u64,
}

/// The body the tool puts in its messages.
pub fn stamp_body(seq: u64) -> String {
    format!("{seq} {}", now_us())
}

/// Where a stamp travels: a message's `<body>`, a presence's `<status>`.
pub const IN_BODY: (&[u8], &[u8]) = (b"<body>", b"</body>");
pub const IN_STATUS: (&[u8], &[u8]) = (b"<status>", b"</status>");

/// Finds the stamp in a raw stanza without building a DOM: the first element of that name
/// (the tool never sends markup inside it, and servers copy it through unchanged).
pub fn read_stamp(raw: &[u8], (open, close): (&[u8], &[u8])) -> Option<Stamp> {
    let start = find(raw, open)? + open.len();
    let end = start + find(&raw[start..], close)?;
    let text = std::str::from_utf8(&raw[start..end]).ok()?;
    let (seq, ts) = text.split_once(' ')?;
    Some(Stamp {
        seq: seq.parse().ok()?,
        sent_us: ts.parse().ok()?,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Per-sender sequence tracking at a receiver.
#[derive(Debug, Default)]
pub struct SeqCheck {
    next: u64,
}

impl SeqCheck {
    /// Counts reordering and gaps for `seq`, the next message from one sender.
    pub fn observe(&mut self, seq: u64, metrics: &Metrics) {
        if seq < self.next {
            inc(&metrics.messages_reordered);
            return;
        }
        if seq > self.next {
            metrics
                .messages_skipped
                .fetch_add(seq - self.next, Ordering::Relaxed);
        }
        self.next = seq + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_roundtrip_in_a_stanza() {
        let raw = b"<message from='a@b/c' type='chat'><body>42 1700000000000001</body><stanza-id xmlns='urn:xmpp:sid:0' id='x'/></message>";
        assert_eq!(
            read_stamp(raw, IN_BODY),
            Some(Stamp {
                seq: 42,
                sent_us: 1_700_000_000_000_001
            })
        );
        assert_eq!(
            read_stamp(b"<message><body>hello</body></message>", IN_BODY),
            None
        );
        let body = stamp_body(7);
        let raw = format!("<message><body>{body}</body></message>");
        assert_eq!(read_stamp(raw.as_bytes(), IN_BODY).unwrap().seq, 7);
        let presence = format!("<presence><status>{body}</status></presence>");
        assert_eq!(read_stamp(presence.as_bytes(), IN_STATUS).unwrap().seq, 7);
    }

    #[test]
    fn sequence_gaps_and_reorders_are_counted() {
        let metrics = Metrics::default();
        let mut check = SeqCheck::default();
        for seq in [0, 1, 3, 2, 4] {
            check.observe(seq, &metrics);
        }
        let c = metrics.counters();
        assert_eq!((c.messages_skipped, c.messages_reordered), (1, 1));
    }

    #[test]
    fn counters_delta() {
        let metrics = Metrics::default();
        inc(&metrics.logins);
        let before = metrics.counters();
        inc(&metrics.logins);
        inc(&metrics.messages_sent);
        let delta = metrics.counters().since(&before);
        assert_eq!((delta.logins, delta.messages_sent), (1, 1));
        let mut sum = before;
        sum.add(&delta);
        assert_eq!(sum, metrics.counters());
    }
}
