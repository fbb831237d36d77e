//! The process's own resources, in the names every Prometheus client uses
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, ...), so
//! that stock dashboards and alerts work. Read from `/proc` at each scrape;
//! on other systems nothing is exported.

use prometheus_client::registry::Registry;

/// Exports the process metrics where the system has them.
pub fn register(registry: &mut Registry) {
    #[cfg(target_os = "linux")]
    registry.register_collector(Box::new(linux::ProcessMetrics));
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

#[cfg(target_os = "linux")]
mod linux {
    use procfs::process::{LimitValue, Process};
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;

    #[derive(Debug)]
    pub struct ProcessMetrics;

    /// One reading of `/proc/self`.
    struct Reading {
        cpu_seconds: f64,
        resident_bytes: u64,
        virtual_bytes: u64,
        start_time_seconds: f64,
        open_fds: Option<usize>,
        max_fds: Option<u64>,
        threads: i64,
    }

    fn read() -> procfs::ProcResult<Reading> {
        let process = Process::myself()?;
        let stat = process.stat()?;
        let ticks = procfs::ticks_per_second() as f64;
        let boot = procfs::boot_time_secs()? as f64;
        let max_fds = match process.limits()?.max_open_files.soft_limit {
            LimitValue::Value(limit) => Some(limit),
            LimitValue::Unlimited => None,
        };
        Ok(Reading {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss * procfs::page_size(),
            virtual_bytes: stat.vsize,
            start_time_seconds: boot + stat.starttime as f64 / ticks,
            // Listing the descriptors can fail on a hardened /proc: the rest
            // is still worth exporting.
            open_fds: process.fd_count().ok(),
            max_fds,
            threads: stat.num_threads,
        })
    }

    /// One unlabelled gauge.
    fn gauge<V>(
        encoder: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        value: V,
    ) -> std::fmt::Result
    where
        ConstGauge<V>: EncodeMetric,
    {
        let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    impl Collector for ProcessMetrics {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            // An unreadable /proc leaves these series out rather than failing
            // the whole scrape.
            let Ok(reading) = read() else {
                return Ok(());
            };
            ConstCounter::new(reading.cpu_seconds).encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                MetricType::Counter,
            )?)?;
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                reading.resident_bytes as i64,
            )?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                reading.virtual_bytes as i64,
            )?;
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                reading.start_time_seconds,
            )?;
            gauge(
                &mut encoder,
                "process_threads",
                "Threads of the process",
                reading.threads,
            )?;
            if let Some(open) = reading.open_fds {
                gauge(
                    &mut encoder,
                    "process_open_fds",
                    "Open file descriptors",
                    open as i64,
                )?;
            }
            if let Some(max) = reading.max_fds {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "Limit on open file descriptors",
                    max as i64,
                )?;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use prometheus_client::registry::Registry;

        fn value(text: &str, name: &str) -> f64 {
            let line = text
                .lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} not in\n{text}"));
            line[name.len() + 1..].parse().expect("a number")
        }

        #[test]
        fn the_process_reports_its_own_resources() {
            let mut registry = Registry::default();
            super::super::register(&mut registry);
            let text = crate::scrape(&registry);
            assert!(value(&text, "process_resident_memory_bytes") > 1_000_000.0);
            assert!(value(&text, "process_open_fds") >= 1.0);
            assert!(value(&text, "process_max_fds") >= value(&text, "process_open_fds"));
            assert!(value(&text, "process_threads") >= 1.0);
            assert!(value(&text, "process_cpu_seconds_total") >= 0.0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64();
            let started = value(&text, "process_start_time_seconds");
            assert!(
                started <= now + 1.0 && started > now - 3600.0,
                "{started} vs {now}"
            );
        }
    }
}
