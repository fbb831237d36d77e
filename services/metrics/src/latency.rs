//! Latency histograms: one bucket layout per kind of wait, and histograms
//! by operation whose handles are resolved once.
//!
//! Every layout is exponential (factor 2), starting near the fastest such
//! wait on an idle loopback and ending well past the point where something
//! is wrong, so that `histogram_quantile` stays meaningful from the quiet
//! case to an outage. Each histogram costs its buckets' counters, not one
//! series per user.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// One hop of a stanza inside a process (routing, the edge's hand-over,
/// a mailbox wait): 10 µs to about 1.3 s.
pub fn stanza_hop() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

/// A login or one of its steps, client round trips included: 1 ms to about
/// 16 s (past the negotiation timeout's usual reach).
pub fn login() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// One call to Redis or to the SQL store: 50 µs to about 1.6 s.
pub fn backing_call() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// The operations one histogram family is labelled by: a field-less enum
/// whose [`index`](Self::index) is its position in [`ALL`](Self::ALL).
pub trait Operation: Copy + Send + Sync + 'static {
    const ALL: &'static [Self];
    /// The `operation` label.
    fn name(self) -> &'static str;
    /// Position in [`ALL`](Self::ALL); `self as usize` for an enum listed
    /// in declaration order.
    fn index(self) -> usize;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// A latency histogram per operation. Each operation's handle is resolved
/// when this is made, so timing a call builds no label set and takes no
/// lock on the family; every operation is exported from the start, at 0.
pub struct OperationLatency<O> {
    family: Family<OperationLabel, Histogram, fn() -> Histogram>,
    by_operation: Arc<[Histogram]>,
    _operation: PhantomData<fn(O)>,
}

impl<O> Clone for OperationLatency<O> {
    fn clone(&self) -> Self {
        OperationLatency {
            family: self.family.clone(),
            by_operation: self.by_operation.clone(),
            _operation: PhantomData,
        }
    }
}

impl<O: Operation> OperationLatency<O> {
    /// `histogram` makes each operation's histogram: one of the layouts above.
    pub fn new(histogram: fn() -> Histogram) -> Self {
        let family = Family::new_with_constructor(histogram);
        let by_operation = O::ALL
            .iter()
            .enumerate()
            .map(|(position, operation)| {
                debug_assert_eq!(operation.index(), position, "Operation::ALL out of order");
                let label = OperationLabel {
                    operation: operation.name(),
                };
                family.get_or_create(&label).clone()
            })
            .collect();
        OperationLatency {
            family,
            by_operation,
            _operation: PhantomData,
        }
    }

    /// Exports the family as `<name>_seconds`, labelled `operation`.
    pub fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register_with_unit(name, help, Unit::Seconds, self.family.clone());
    }

    /// Counts one `operation` that began at `started`.
    pub fn observe(&self, operation: O, started: Instant) {
        self.by_operation[operation.index()].observe(started.elapsed().as_secs_f64());
    }

    /// Runs `call`, timing it as `operation`, whatever its outcome.
    pub async fn time<T>(&self, operation: O, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let result = call.await;
        self.observe(operation, started);
        result
    }
}

impl<O: Operation> Default for OperationLatency<O> {
    /// Layout of a call to a backing service (Redis, SQL).
    fn default() -> Self {
        Self::new(backing_call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    enum Call {
        Read,
        Write,
    }

    impl Operation for Call {
        const ALL: &'static [Self] = &[Call::Read, Call::Write];
        fn name(self) -> &'static str {
            match self {
                Call::Read => "read",
                Call::Write => "write",
            }
        }
        fn index(self) -> usize {
            self as usize
        }
    }

    #[tokio::test]
    async fn a_timed_call_counts_under_its_operation_and_the_others_show_zero() {
        let latency = OperationLatency::<Call>::default();
        let mut registry = Registry::default();
        latency.register(&mut registry, "test_call", "Calls");
        let answer = latency.time(Call::Write, async { 42 }).await;
        assert_eq!(answer, 42);
        let text = crate::scrape(&registry);
        assert!(
            text.contains(r#"test_call_seconds_count{operation="write"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_call_seconds_count{operation="read"} 0"#),
            "{text}"
        );
        assert!(text.contains("# UNIT test_call_seconds seconds"), "{text}");
    }
}
