//! Prometheus metric types every xmppd crate shares.
//!
//! - [`latency`]: the bucket layouts of the latency histograms, and
//!   [`Calls`]: a backing service's calls by operation, timed and their
//!   failures counted, the label resolved once, so that a call costs one
//!   `Instant` pair, one observe and no label set.
//! - [`scraped`]: gauges computed when Prometheus scrapes (queue depths), so
//!   that nothing is counted per stanza to keep them.
//! - [`process`]: the process's CPU time, memory, file descriptors and start
//!   time, read from `/proc` at scrape time (Linux only).
//! - [`register_build_info`]: `xmppd_build_info{version}`, always 1.

pub mod latency;
pub mod process;
pub mod scraped;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use latency::{CallError, Calls, Operation};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// `xmppd_build_info{version}` = 1: which release a process runs, for
/// dashboards and for alerts that must know a rollout is under way.
pub fn register_build_info(registry: &mut Registry, version: &'static str) {
    registry.register(
        "xmppd_build",
        "The xmppd release this process runs",
        Info::new(BuildLabels { version }),
    );
}

#[cfg(test)]
pub(crate) fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_is_named_by_its_version() {
        let mut registry = Registry::default();
        register_build_info(&mut registry, "1.2.3");
        let text = scrape(&registry);
        assert!(
            text.lines()
                .any(|line| line == r#"xmppd_build_info{version="1.2.3"} 1"#),
            "{text}"
        );
    }
}
