//! Settling the deliveries a router handed this node: telling it, for each
//! stanza it keeps a copy of, whether the client has it (delivered) or never
//! will (returned, for the router to route again).
//!
//! A delivery travels to its client stream with a [`Receipt`]. The stream
//! settles it as delivered once the stanza is written to the client or, with
//! stream management, once the client acknowledged it; a receipt dropped
//! unsettled (the stanza waited in a mailbox that closed or overflowed, or
//! was held for a session that ended) returns its delivery. So no path that
//! loses a stanza here can forget to say so.
//!
//! Settlements are batched per router stream in a [`Ledger`], whose task
//! sends them as one `EdgeUp.settled` frame [`SETTLE_DELAY`] after the first
//! of a batch: a frame per stanza would wake the router stream's writer, and
//! the router, once more for every stanza delivered.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use xmppd_grpc::{EdgeUp, Settled, edge_up};

/// How long a settlement may wait to share a frame with others. The router
/// keeps its copies only that much longer.
pub const SETTLE_DELAY: Duration = Duration::from_millis(20);

/// The settlements owed to one router stream.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
    /// Wakes [`Ledger::forward`] for a batch's first settlement, or to stop.
    batch_started: Notify,
}

#[derive(Default)]
struct State {
    settled: Settled,
    /// The router stream is gone: the router returns whatever was not
    /// settled by then, so later settlements go nowhere.
    closed: bool,
}

impl Ledger {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock: no half-made change to see.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receipt for the delivery `seq` of this ledger's router stream; 0
    /// (the router kept no copy) makes one that settles nothing.
    pub fn receipt(self: &Arc<Self>, seq: u64) -> Receipt {
        Receipt {
            owed: (seq != 0).then(|| (self.clone(), seq)),
        }
    }

    fn settle(&self, seq: u64, delivered: bool) {
        let first = {
            let mut state = self.state();
            if state.closed {
                return;
            }
            let settled = &mut state.settled;
            let first = settled.delivered.is_empty() && settled.returned.is_empty();
            if delivered {
                settled.delivered.push(seq);
            } else {
                settled.returned.push(seq);
            }
            first
        };
        if first {
            self.batch_started.notify_one();
        }
    }

    /// The router stream is gone: [`Ledger::forward`] stops.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.settled = Settled::default();
        drop(state);
        self.batch_started.notify_one();
    }

    /// Sends the settlements up the router stream, batched, until the
    /// ledger is closed or the stream is.
    pub async fn forward(self: Arc<Self>, up: mpsc::Sender<EdgeUp>) {
        loop {
            self.batch_started.notified().await;
            tokio::time::sleep(SETTLE_DELAY).await;
            let settled = {
                let mut state = self.state();
                if state.closed {
                    return;
                }
                mem::take(&mut state.settled)
            };
            let frame = EdgeUp {
                frame: Some(edge_up::Frame::Settled(settled)),
            };
            if up.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// The router's claim on one delivery, travelling with the stanza to its
/// client stream. Settled once, by [`Receipt::delivered`]; dropped without
/// that, it returns the delivery.
#[must_use = "dropping a receipt returns its delivery to the router"]
pub struct Receipt {
    owed: Option<(Arc<Ledger>, u64)>,
}

impl Receipt {
    /// A stanza no router keeps a copy of (this node's own answers, or what
    /// a router would drop anyway if it came back).
    pub const NONE: Receipt = Receipt { owed: None };

    /// The client has the stanza: the router may forget its copy.
    pub fn delivered(mut self) {
        if let Some((ledger, seq)) = self.owed.take() {
            ledger.settle(seq, true);
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some((ledger, seq)) = self.owed.take() {
            ledger.settle(seq, false);
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seq = self.owed.as_ref().map(|(_, seq)| *seq);
        f.debug_struct("Receipt").field("seq", &seq).finish()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The ledger of a router stream whose frames land on the receiver.
    pub fn ledger() -> (Arc<Ledger>, mpsc::Receiver<EdgeUp>) {
        let ledger = Arc::new(Ledger::default());
        let (up, frames) = mpsc::channel(8);
        tokio::spawn(ledger.clone().forward(up));
        (ledger, frames)
    }

    pub async fn next_settled(frames: &mut mpsc::Receiver<EdgeUp>) -> Settled {
        match frames.recv().await.and_then(|frame| frame.frame) {
            Some(edge_up::Frame::Settled(settled)) => settled,
            other => panic!("expected settlements, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn settlements_go_up_together_after_the_delay() {
        let (ledger, mut frames) = ledger();
        let started = tokio::time::Instant::now();
        ledger.receipt(1).delivered();
        drop(ledger.receipt(2));
        ledger.receipt(3).delivered();
        // What the router kept no copy of settles nothing.
        Receipt::NONE.delivered();
        drop(ledger.receipt(0));
        let batch = next_settled(&mut frames).await;
        assert!(started.elapsed() >= SETTLE_DELAY);
        assert_eq!(batch.delivered, [1, 3]);
        assert_eq!(batch.returned, [2]);
        // The next batch waits for its own first settlement.
        ledger.receipt(4).delivered();
        assert_eq!(next_settled(&mut frames).await.delivered, [4]);
    }

    #[tokio::test]
    async fn a_closed_ledger_stops_and_drops_later_settlements() {
        let (ledger, mut frames) = ledger();
        let receipt = ledger.receipt(1);
        ledger.close();
        receipt.delivered();
        assert!(frames.recv().await.is_none());
    }
}
