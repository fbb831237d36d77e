//! Per-account serialisation inside one replica.
//!
//! Frames are spread over a fixed set of workers by a hash of the account
//! they touch: one account's frames run one at a time and in arrival order
//! (whichever router stream they came on), different accounts in parallel.
//! A frame is acknowledged to its router once its output is queued on that
//! router's stream. A session's clean-up that failed is queued again on its
//! worker, later, by the worker itself.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{self, WeakSender};
use tonic::Status;
use xmppd_grpc::{SessionDown, session_down, session_up};
use xmppd_registry::Unbound;

use crate::handler::{self, Handled};
use crate::service::Core;

/// Workers per replica: enough to overlap storage round trips.
const WORKERS: usize = 64;
const WORKER_QUEUE: usize = 1024;

pub type RouterSender = mpsc::Sender<Result<SessionDown, Status>>;

/// Where a job's output goes.
pub enum Sink {
    /// Back on the router stream the frame came from, then acknowledged.
    Stream {
        out: RouterSender,
        acks: Arc<AckTracker>,
        seq: u64,
    },
    /// Work the replica started itself (the reaper): any router stream.
    AnyRouter,
}

pub struct Job {
    pub owner: String,
    /// `None` for a frame with nothing in it, acknowledged all the same.
    pub work: Option<Work>,
    pub sink: Sink,
    /// Earlier tries of this work that failed: a session clean-up is tried
    /// again, later each time ([`retry_later`]).
    pub tries: u32,
}

/// What a job does to its account.
pub enum Work {
    /// A frame a router sent, or the reaper made.
    Frame(session_up::Frame),
    /// A session that a bind of its full JID replaced (RFC 6120 §7.7.2.2),
    /// already out of the registry, which ends as any other.
    Replaced(Unbound),
    /// A resource of the account was bound: the account's policy goes into
    /// the registry if it is not there yet (the account's first resource).
    Bound,
}

pub struct Shards {
    workers: Vec<mpsc::Sender<Job>>,
    hasher: RandomState,
}

impl Shards {
    pub fn start(core: Arc<Core>) -> Self {
        let workers = (0..WORKERS)
            .map(|_| {
                let (tx, rx) = mpsc::channel(WORKER_QUEUE);
                tokio::spawn(work(core.clone(), rx, tx.downgrade()));
                tx
            })
            .collect();
        Shards {
            workers,
            hasher: RandomState::new(),
        }
    }

    /// Jobs waiting in every worker's queue, and in the fullest one (one
    /// busy account, or a slow store, fills its worker's queue first).
    pub fn queued_jobs(&self) -> (usize, usize) {
        self.workers
            .iter()
            .map(|worker| worker.max_capacity() - worker.capacity())
            .fold((0, 0), |(total, fullest), queued| {
                (total + queued, fullest.max(queued))
            })
    }

    pub async fn dispatch(&self, job: Job) {
        let index = self.hasher.hash_one(&job.owner) as usize % self.workers.len();
        if self.workers[index].send(job).await.is_err() {
            tracing::error!("session worker stopped");
        }
    }
}

async fn work(core: Arc<Core>, mut jobs: mpsc::Receiver<Job>, itself: WeakSender<Job>) {
    while let Some(job) = jobs.recv().await {
        let Handled { frames, retry } = match job.work {
            Some(work) => handler::handle(&core, &job.owner, work).await,
            None => Handled::default(),
        };
        if let Some(work) = retry {
            let again = Job {
                owner: job.owner,
                work: Some(work),
                sink: Sink::AnyRouter,
                tries: job.tries + 1,
            };
            retry_later(again, itself.clone());
        }
        match job.sink {
            Sink::Stream { out, acks, seq } => {
                for frame in frames {
                    let _ = out.send(Ok(down(frame))).await;
                }
                if let Some(acked) = acks.complete(seq) {
                    let _ = out.send(Ok(down(session_down::Frame::Ack(acked)))).await;
                }
            }
            Sink::AnyRouter => {
                core.send_to_any_router(frames).await;
            }
        }
    }
}

/// Session clean-ups tried at most this many times: about five minutes of
/// a registry or store that keeps failing.
const CLEAN_UP_TRIES: u32 = 10;
/// The wait before the first retry, doubled for each one after, up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How long a job that failed `tries` times waits before its next try;
/// `None` once it has had them all.
fn retry_delay(tries: u32) -> Option<Duration> {
    (tries < CLEAN_UP_TRIES).then(|| {
        FIRST_RETRY_DELAY
            .saturating_mul(1 << tries.saturating_sub(1).min(16))
            .min(MAX_RETRY_DELAY)
    })
}

/// Queues `job` on its worker again after a delay that grows with its
/// tries, unless it has had them all.
fn retry_later(job: Job, worker: WeakSender<Job>) {
    let Some(delay) = retry_delay(job.tries) else {
        tracing::error!(owner = %job.owner, tries = job.tries, "session clean-up failed, given up");
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if let Some(worker) = worker.upgrade() {
            let _ = worker.send(job).await;
        }
    });
}

pub fn down(frame: session_down::Frame) -> SessionDown {
    SessionDown { frame: Some(frame) }
}

/// Turns out-of-order completions into a cumulative acknowledgement.
#[derive(Default)]
pub struct AckTracker {
    state: Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    acked: u64,
    done_ahead: BTreeSet<u64>,
}

impl AckTracker {
    /// Marks `seq` done; returns the new cumulative acknowledgement if it
    /// advanced.
    pub fn complete(&self, seq: u64) -> Option<u64> {
        let mut state = self.state.lock().expect("ack lock");
        state.done_ahead.insert(seq);
        let before = state.acked;
        loop {
            let next = state.acked + 1;
            if !state.done_ahead.remove(&next) {
                break;
            }
            state.acked = next;
        }
        (state.acked > before).then_some(state.acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_ups_are_tried_again_later_each_time_then_given_up() {
        let delays: Vec<u64> = (1..)
            .map_while(retry_delay)
            .map(|delay| delay.as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn acknowledges_only_contiguous_prefixes() {
        let acks = AckTracker::default();
        assert_eq!(acks.complete(2), None);
        assert_eq!(acks.complete(3), None);
        assert_eq!(acks.complete(1), Some(3));
        assert_eq!(acks.complete(5), None);
        assert_eq!(acks.complete(4), Some(5));
    }
}
