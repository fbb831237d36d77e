//! The process's `tracing` subscriber: log lines, as text or as JSON
//! lines (which carry the current span's trace ids), and, when
//! `tracing.enabled`, the spans of xmppd's crates exported through
//! [`crate::traces`].

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_otlp::ExporterBuildError;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::Targets, reload};

use crate::config::{Config, LogFormat, ObservabilityConfig};
use crate::traces;

/// The target prefix of xmppd's own crates, whose spans are exported.
const OWN_TARGETS: &str = "xmppd";

/// What [`init`] installed that must be flushed before the process exits.
#[must_use = "flush the traces with Telemetry::shutdown before exiting"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    log_filter: LogFilter,
}

/// The log lines' filter, which a configuration reload may replace
/// (`observability.log`); fixed while `RUST_LOG` sets it.
#[derive(Clone, Default)]
pub struct LogFilter {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

impl LogFilter {
    /// Filters the log lines by `directives` (`RUST_LOG` syntax) from now on.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let Some(handle) = &self.handle else {
            return Ok(());
        };
        let filter = EnvFilter::try_new(directives).map_err(|error| error.to_string())?;
        // The subscriber is gone only when another one was installed first (tests that
        // compose several services in one process): that one's filter stays.
        let _ = handle.reload(filter);
        Ok(())
    }
}

impl Telemetry {
    /// The log lines' filter, for reloads.
    pub fn log_filter(&self) -> LogFilter {
        self.log_filter.clone()
    }

    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Blocks until the exporter's thread is done, which itself needs the
        // runtime's workers (its connections run there): off them.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "traces not all exported"),
            Err(error) => tracing::warn!(%error, "traces not all exported"),
        }
    }
}

/// Installs the global log subscriber (filtered by `observability.log`,
/// which `RUST_LOG` overrides, in `observability.log_format`, on standard
/// error) and, when `tracing.enabled`, the exporter of this process's spans,
/// under the resource `service.name = service`, `service.instance.id =
/// instance`. Runs inside the tokio runtime.
pub fn init(
    config: &Config,
    service: &str,
    instance: &str,
) -> Result<Telemetry, ExporterBuildError> {
    let provider = if config.tracing.enabled {
        Some(traces::provider(&config.tracing, service, instance)?)
    } else {
        None
    };
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (dispatch, log_filter) = subscriber(
        &config.observability,
        provider.as_ref(),
        std::io::stderr,
        colour,
    );
    // A second call (tests composing several services) keeps the first.
    if tracing::dispatcher::set_global_default(dispatch).is_ok() && provider.is_some() {
        traces::set_enabled();
    }
    Ok(Telemetry {
        provider,
        log_filter,
    })
}

/// Log lines written to `writer`, ANSI-coloured when `colour` (text only),
/// and the spans of xmppd's crates exported through `provider`, if any; and
/// the lines' filter.
fn subscriber<W>(
    observability: &ObservabilityConfig,
    provider: Option<&SdkTracerProvider>,
    writer: W,
    colour: bool,
) -> (Dispatch, LogFilter)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let spans = provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("xmppd"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(OWN_TARGETS, Level::INFO))
    });
    let (filter, reloadable) = match EnvFilter::try_from_default_env() {
        Ok(fixed) => (fixed, false),
        Err(_) => (EnvFilter::new(&observability.log), true),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let log_filter = LogFilter {
        handle: reloadable.then_some(handle),
    };
    let installed = Arc::new(OnceLock::new());
    let lines = match observability.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(colour)
            .with_target(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .event_format(JsonLines {
                subscriber: installed.clone(),
            })
            .boxed(),
    };
    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .with(spans),
    );
    let _ = installed.set(dispatch.downgrade());
    (dispatch, log_filter)
}

/// One JSON object per event: `timestamp`, `level`, `target`, `message`,
/// the event's other `fields`, the current `span`'s name and, while traces
/// are exported, its `trace_id` and `span_id`.
struct JsonLines {
    /// The subscriber it formats for, through which the spans' trace ids
    /// are read (while an event is dispatched, `tracing` answers no
    /// dispatcher).
    subscriber: Arc<OnceLock<WeakDispatch>>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let metadata = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        line.insert("message".into(), fields.message.into());
        if !fields.others.is_empty() {
            line.insert("fields".into(), fields.others.into());
        }
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            let scope = span.scope().map(|span| span.id());
            if let Some((trace_id, span_id)) = self.trace_ids(scope) {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

impl JsonLines {
    /// The trace and span ids of the innermost of `scope` that is exported.
    fn trace_ids(
        &self,
        scope: impl Iterator<Item = tracing::span::Id>,
    ) -> Option<(String, String)> {
        let subscriber = self.subscriber.get()?.upgrade()?;
        scope
            .filter_map(|id| tracing_opentelemetry::get_otel_context(&id, &subscriber))
            .map(|context| context.span().span_context().clone())
            .find(|span| span.is_valid())
            .map(|span| (span.trace_id().to_string(), span.span_id().to_string()))
    }
}

/// An event's fields as JSON values: `message` apart.
#[derive(Default)]
struct JsonFields {
    message: String,
    others: serde_json::Map<String, serde_json::Value>,
}

impl JsonFields {
    fn insert(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        match (field.name(), value) {
            ("message", serde_json::Value::String(message)) => self.message = message,
            (name, value) => {
                self.others.insert(name.to_string(), value);
            }
        }
    }
}

impl tracing::field::Visit for JsonFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.insert(field, value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.insert(field, value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.insert(field, value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.insert(field, value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.insert(field, value.into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.insert(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines written into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        }
    }

    fn json_logs() -> ObservabilityConfig {
        ObservabilityConfig {
            log_format: LogFormat::Json,
            ..ObservabilityConfig::default()
        }
    }

    #[test]
    fn a_json_line_carries_the_trace_and_span_ids_of_its_span() {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let (dispatch, _) =
            subscriber(&json_logs(), Some(&provider), move || writer.clone(), false);
        let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let span = tracing::info_span!("route");
            let _entered = span.enter();
            tracing::info!(attempts = 3, node = "cm-1", "stream lost");
            let context = span.context().span().span_context().clone();
            (
                context.trace_id().to_string(),
                context.span_id().to_string(),
            )
        });
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "stream lost");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["attempts"], 3);
        assert_eq!(line["fields"]["node"], "cm-1");
        assert_eq!(line["span"], "route");
        assert_eq!(line["trace_id"], trace_id.as_str());
        assert_eq!(line["span_id"], span_id.as_str());
        assert_ne!(trace_id, "00000000000000000000000000000000");
    }

    #[test]
    fn a_json_line_without_traces_has_no_ids() {
        let captured = Captured::default();
        let writer = captured.clone();
        let (dispatch, _) = subscriber(&json_logs(), None, move || writer.clone(), false);
        tracing::dispatcher::with_default(&dispatch, || {
            let _entered = tracing::info_span!("route").entered();
            tracing::warn!("router stream lost, reconnecting");
        });
        let lines = captured.lines();
        assert_eq!(lines[0]["message"], "router stream lost, reconnecting");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["span"], "route");
        assert!(lines[0].get("trace_id").is_none(), "{lines:?}");
        assert!(lines[0].get("fields").is_none(), "{lines:?}");
    }

    #[test]
    fn a_new_log_filter_applies_to_the_next_lines() {
        let captured = Captured::default();
        let writer = captured.clone();
        let observability = ObservabilityConfig {
            log: "warn".into(),
            ..json_logs()
        };
        let (dispatch, filter) = subscriber(&observability, None, move || writer.clone(), false);
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("before");
            filter.set("info").unwrap();
            tracing::info!("after");
        });
        let messages: Vec<_> = captured
            .lines()
            .iter()
            .map(|l| l["message"].clone())
            .collect();
        assert_eq!(messages, ["after"]);
        assert!(filter.set("info,[=").is_err());
    }
}
