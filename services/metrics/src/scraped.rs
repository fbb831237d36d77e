//! Gauges computed when Prometheus scrapes: a queue's depth is read from
//! the queue itself, so the hot path keeps no counter up to date for it.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// A gauge whose value `read` computes at every scrape.
pub struct ScrapedGauge<F> {
    name: &'static str,
    help: &'static str,
    read: F,
}

impl<F> ScrapedGauge<F>
where
    F: Fn() -> i64 + Send + Sync + 'static,
{
    pub fn register(registry: &mut Registry, name: &'static str, help: &'static str, read: F) {
        registry.register_collector(Box::new(ScrapedGauge { name, help, read }));
    }
}

impl<F> std::fmt::Debug for ScrapedGauge<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapedGauge")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<F> Collector for ScrapedGauge<F>
where
    F: Fn() -> i64 + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let metric = encoder.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        ConstGauge::new((self.read)()).encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;

    #[test]
    fn the_value_is_read_at_each_scrape() {
        let depth = Arc::new(AtomicI64::new(3));
        let mut registry = Registry::default();
        let read = depth.clone();
        ScrapedGauge::register(&mut registry, "test_queued", "Queued", move || {
            read.load(Ordering::Relaxed)
        });
        assert!(crate::scrape(&registry).contains("test_queued 3\n"));
        depth.store(7, Ordering::Relaxed);
        assert!(crate::scrape(&registry).contains("test_queued 7\n"));
    }
}
