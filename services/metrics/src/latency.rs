//! Latency histograms: one bucket layout per kind of wait, and the calls
//! to a backing service by operation, whose handles are resolved once.
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
use prometheus_client::metrics::counter::Counter;
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

/// Runs `work`, observing how long it took in `histogram`.
pub async fn time<T>(histogram: &Histogram, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let result = work.await;
    histogram.observe(started.elapsed().as_secs_f64());
    result
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

/// Calls to a backing service (Redis, the SQL store) by operation: how long
/// each took, and how many failed. Each operation's handles are resolved
/// when this is made, so a call builds no label set and takes no lock on
/// the families; every operation is exported from the start, at 0.
pub struct Calls<O> {
    latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    errors: Family<OperationLabel, Counter>,
    by_operation: Arc<[(Histogram, Counter)]>,
    _operation: PhantomData<fn(O)>,
}

impl<O> std::fmt::Debug for Calls<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").finish_non_exhaustive()
    }
}

/// Whether a call's error is the backing service failing, counted in
/// `_call_errors_total`, rather than an answer such as "already exists".
pub trait CallError {
    fn is_failure(&self) -> bool;
}

impl<O> Clone for Calls<O> {
    fn clone(&self) -> Self {
        Calls {
            latency: self.latency.clone(),
            errors: self.errors.clone(),
            by_operation: self.by_operation.clone(),
            _operation: PhantomData,
        }
    }
}

impl<O: Operation> Calls<O> {
    pub fn new() -> Self {
        let latency = Family::<_, _, fn() -> Histogram>::new_with_constructor(backing_call);
        let errors = Family::<OperationLabel, Counter>::default();
        let by_operation = O::ALL
            .iter()
            .enumerate()
            .map(|(position, operation)| {
                debug_assert_eq!(operation.index(), position, "Operation::ALL out of order");
                let label = OperationLabel {
                    operation: operation.name(),
                };
                (
                    latency.get_or_create(&label).clone(),
                    errors.get_or_create(&label).clone(),
                )
            })
            .collect();
        Calls {
            latency,
            errors,
            by_operation,
            _operation: PhantomData,
        }
    }

    /// Exports `<prefix>_call_seconds` and `<prefix>_call_errors_total`,
    /// both labelled `operation`; `service` names what is called in their help.
    pub fn register(&self, registry: &mut Registry, prefix: &str, service: &str) {
        registry.register_with_unit(
            format!("{prefix}_call"),
            format!("Calls to {service} by operation, from the first request to the last answer"),
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            format!("{prefix}_call_errors"),
            format!("Calls to {service} that failed, by operation"),
            self.errors.clone(),
        );
    }

    /// Runs `call` as `operation`: timed whatever its outcome, counted as an
    /// error when it fails with a [failure](CallError::is_failure).
    pub async fn call<T, E: CallError>(
        &self,
        operation: O,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        let (latency, errors) = &self.by_operation[operation.index()];
        latency.observe(started.elapsed().as_secs_f64());
        if result.as_ref().is_err_and(CallError::is_failure) {
            errors.inc();
        }
        result
    }
}

impl<O: Operation> Default for Calls<O> {
    fn default() -> Self {
        Self::new()
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

    #[derive(Debug, PartialEq)]
    enum Failed {
        Down,
        NotFound,
    }

    impl CallError for Failed {
        fn is_failure(&self) -> bool {
            *self == Failed::Down
        }
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
    async fn a_call_counts_under_its_operation_and_only_failures_as_errors() {
        let calls = Calls::<Call>::new();
        let mut registry = Registry::default();
        calls.register(&mut registry, "test", "a test");
        let ok = calls.call(Call::Write, async { Ok::<_, Failed>(42) }).await;
        assert_eq!(ok, Ok(42));
        let down = calls
            .call(Call::Write, async { Err::<(), _>(Failed::Down) })
            .await;
        assert_eq!(down, Err(Failed::Down));
        let answer = calls
            .call(Call::Write, async { Err::<(), _>(Failed::NotFound) })
            .await;
        assert_eq!(answer, Err(Failed::NotFound));
        let text = crate::scrape(&registry);
        for line in [
            r#"test_call_seconds_count{operation="write"} 3"#,
            r#"test_call_seconds_count{operation="read"} 0"#,
            r#"test_call_errors_total{operation="write"} 1"#,
            r#"test_call_errors_total{operation="read"} 0"#,
            "# UNIT test_call_seconds seconds",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
