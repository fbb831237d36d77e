//! A bound client stream's mailbox: deliveries from the cluster wait here
//! until the stream's task writes them out.
//!
//! A tokio `mpsc` channel would do the job, but each one allocates a block
//! of 32 slots and a cache-padded header up front: about 1.5 KiB per
//! connection, most of what an idle connection costs. This queue is a few
//! words while empty; its buffer grows when deliveries pile up and is
//! released whenever it drains: an allocation per burst is cheap, holding
//! one in every idle connection is not. One sender (the cluster's session table)
//! and one receiver (the stream's task), so a mutex held for a push or a pop
//! is all the synchronisation it needs: the waiting receiver's waker is kept
//! under it too (a `Notify` would take a second lock, on its waiter list, to
//! wait and again to wake, for every stanza delivered to a waiting stream).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::cluster::Delivery;

/// The most that may wait for one client, in stanzas and in their bytes:
/// in its mailbox, and again (XEP-0198) among the stanzas written to it that
/// it has not acknowledged yet. A client that falls this far behind is
/// disconnected rather than holding the server's memory.
#[derive(Clone, Copy, Debug)]
pub struct QueueLimits {
    pub stanzas: usize,
    pub bytes: usize,
}

/// The limits of every client stream's queues.
pub const CLIENT_QUEUE_LIMITS: QueueLimits = QueueLimits {
    stanzas: 1024,
    bytes: 4 * 1024 * 1024,
};

/// A mailbox holding at most `limits` of deliveries; a stream-closing
/// delivery always fits in a slot of its own.
pub fn channel(limits: QueueLimits) -> (MailboxSender, Mailbox) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            limits,
            closing: false,
            sender_gone: false,
            receiver_gone: false,
            waiting: None,
        }),
    });
    (MailboxSender(shared.clone()), Mailbox(shared))
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    queue: VecDeque<Delivery>,
    /// The bytes of the stanzas in `queue`.
    bytes: usize,
    limits: QueueLimits,
    /// A delivery that closes the stream is queued: nothing after it would
    /// be written.
    closing: bool,
    sender_gone: bool,
    receiver_gone: bool,
    /// The receiver waiting in [`Recv`]: woken by the next push, or when the
    /// sender goes away.
    waiting: Option<Waker>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, so poisoning cannot carry a
        // half-made change.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The cluster's side: queues deliveries without waiting.
pub struct MailboxSender(Arc<Shared>);

impl MailboxSender {
    /// Queues `delivery`, or gives it back if the mailbox is full, closing
    /// or its stream is gone.
    pub fn try_send(&self, delivery: Delivery) -> Result<(), Delivery> {
        let waiting = {
            let mut state = self.0.state();
            if state.receiver_gone
                || state.closing
                || state.queue.len() >= state.limits.stanzas
                || state.bytes + delivery.queued_bytes() > state.limits.bytes
            {
                return Err(delivery);
            }
            state.bytes += delivery.queued_bytes();
            state.closing = matches!(delivery, Delivery::Close { .. });
            state.queue.push_back(delivery);
            state.waiting.take()
        };
        if let Some(receiver) = waiting {
            receiver.wake();
        }
        Ok(())
    }

    /// How many deliveries wait in the mailbox.
    pub fn queued(&self) -> usize {
        self.0.state().queue.len()
    }

    /// Whether a stanza of `bytes` fits and still leaves a slot for the
    /// delivery that closes the stream.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        let state = self.0.state();
        state.queue.len() + 1 < state.limits.stanzas && state.bytes + bytes <= state.limits.bytes
    }
}

impl Drop for MailboxSender {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.0.state();
            state.sender_gone = true;
            state.waiting.take()
        };
        if let Some(receiver) = waiting {
            receiver.wake();
        }
    }
}

/// The stream's side.
pub struct Mailbox(Arc<Shared>);

impl Mailbox {
    /// The next delivery, in the order queued; `None` once the sender is
    /// gone and everything queued has been taken. Cancel-safe: a delivery is
    /// only taken when this returns it.
    pub fn recv(&mut self) -> Recv<'_> {
        Recv {
            mailbox: self,
            waiting: false,
        }
    }

    /// The next delivery if one is queued.
    pub fn try_recv(&mut self) -> Result<Delivery, Empty> {
        Self::pop(&mut self.0.state())
    }

    fn pop(state: &mut State) -> Result<Delivery, Empty> {
        match state.queue.pop_front() {
            Some(delivery) => {
                state.bytes -= delivery.queued_bytes();
                if state.queue.is_empty() {
                    state.queue = VecDeque::new();
                }
                Ok(delivery)
            }
            None if state.sender_gone => Err(Empty::SenderGone),
            None => Err(Empty::Waiting),
        }
    }
}

/// The future of [`Mailbox::recv`]. Dropped while waiting (another branch
/// of a `select!` won), it takes its waker back, so that a push meanwhile
/// does not wake the stream's task for nothing.
pub struct Recv<'a> {
    mailbox: &'a mut Mailbox,
    /// Whether its waker is in the mailbox.
    waiting: bool,
}

impl Future for Recv<'_> {
    type Output = Option<Delivery>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.mailbox.0.state();
        let taken = Mailbox::pop(&mut state);
        let waiting = matches!(taken, Err(Empty::Waiting));
        let slot = &mut state.waiting;
        if !waiting {
            *slot = None;
        } else if let Some(waker) = slot {
            // Polled again: usually the same task, whose waker is there.
            waker.clone_from(cx.waker());
        } else {
            *slot = Some(cx.waker().clone());
        }
        drop(state);
        self.waiting = waiting;
        match taken {
            Ok(delivery) => Poll::Ready(Some(delivery)),
            Err(Empty::SenderGone) => Poll::Ready(None),
            Err(Empty::Waiting) => Poll::Pending,
        }
    }
}

impl Drop for Recv<'_> {
    fn drop(&mut self) {
        if self.waiting {
            self.mailbox.0.state().waiting = None;
        }
    }
}

/// Why [`Mailbox::try_recv`] returned nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Empty {
    /// More may come.
    Waiting,
    /// Nothing more will come.
    SenderGone,
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.receiver_gone = true;
        state.queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::cluster::Receipt;
    use bytes::Bytes;

    use super::*;

    fn stanza(text: &'static str) -> Delivery {
        delivery(Bytes::from_static(text.as_bytes()))
    }

    fn delivery(payload: Bytes) -> Delivery {
        Delivery::Stanza {
            payload,
            receipt: Receipt::NONE,
            queued_at: std::time::Instant::now(),
        }
    }

    fn limits(stanzas: usize) -> QueueLimits {
        QueueLimits {
            stanzas,
            bytes: 1024,
        }
    }

    fn text(delivery: Option<Delivery>) -> String {
        match delivery {
            Some(Delivery::Stanza { payload, .. }) => {
                String::from_utf8_lossy(&payload).into_owned()
            }
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn delivers_in_order_and_refuses_beyond_capacity() {
        let (sender, mut mailbox) = channel(limits(3));
        assert!(sender.has_room_for(1));
        sender.try_send(stanza("a")).unwrap();
        sender.try_send(stanza("b")).unwrap();
        // The last slot is the stream error's.
        assert!(!sender.has_room_for(1));
        sender.try_send(stanza("c")).unwrap();
        assert!(sender.try_send(stanza("d")).is_err());
        assert_eq!(text(mailbox.recv().await), "a");
        assert_eq!(text(mailbox.recv().await), "b");
        assert!(sender.has_room_for(1));
    }

    #[tokio::test]
    async fn refuses_beyond_its_bytes() {
        let (sender, mut mailbox) = channel(limits(100));
        let big = delivery(Bytes::from(vec![b'x'; 1000]));
        sender.try_send(big).unwrap();
        assert!(sender.has_room_for(24));
        assert!(!sender.has_room_for(25));
        let too_big = delivery(Bytes::from(vec![b'x'; 25]));
        assert!(sender.try_send(too_big).is_err());
        // A stream error takes no bytes, and nothing is taken after it.
        let close = Delivery::Close {
            condition: xmppd_protocol::error::StreamErrorCondition::ResourceConstraint,
            text: "".into(),
        };
        sender.try_send(close).unwrap();
        assert!(sender.try_send(stanza("late")).is_err());
        mailbox.recv().await.unwrap();
        assert!(matches!(mailbox.recv().await, Some(Delivery::Close { .. })));
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver() {
        let (sender, mut mailbox) = channel(limits(4));
        let receiver = tokio::spawn(async move { text(mailbox.recv().await) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        sender.try_send(stanza("late")).unwrap();
        let received = tokio::time::timeout(Duration::from_secs(5), receiver).await;
        assert_eq!(received.unwrap().unwrap(), "late");
    }

    #[tokio::test]
    async fn ends_after_the_sender_is_gone_and_the_queue_drained() {
        let (sender, mut mailbox) = channel(limits(4));
        sender.try_send(stanza("last")).unwrap();
        drop(sender);
        assert_eq!(text(mailbox.recv().await), "last");
        assert!(mailbox.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_receiver_learns_the_sender_is_gone() {
        let (sender, mut mailbox) = channel(limits(4));
        let receiver = tokio::spawn(async move { mailbox.recv().await.is_none() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(sender);
        let ended = tokio::time::timeout(Duration::from_secs(5), receiver).await;
        assert!(ended.unwrap().unwrap());
    }

    #[test]
    fn refuses_once_the_stream_is_gone() {
        let (sender, mailbox) = channel(limits(4));
        drop(mailbox);
        assert!(sender.try_send(stanza("nobody")).is_err());
    }

    #[test]
    fn a_receiver_that_stops_waiting_takes_its_waker_back() {
        let (sender, mut mailbox) = channel(limits(4));
        let mut cx = Context::from_waker(Waker::noop());
        {
            let mut recv = std::pin::pin!(mailbox.recv());
            assert!(recv.as_mut().poll(&mut cx).is_pending());
            assert!(mailbox_waiting(&sender));
        }
        assert!(!mailbox_waiting(&sender));
        sender.try_send(stanza("later")).unwrap();
        assert_eq!(text(mailbox.try_recv().ok()), "later");
    }

    fn mailbox_waiting(sender: &MailboxSender) -> bool {
        sender.0.state().waiting.is_some()
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_buffer_back() {
        let (sender, mut mailbox) = channel(limits(1024));
        for _ in 0..100 {
            sender.try_send(stanza("x")).unwrap();
        }
        for _ in 0..100 {
            mailbox.recv().await.unwrap();
        }
        assert_eq!(mailbox.0.state().queue.capacity(), 0);
    }
}
