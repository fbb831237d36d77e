//! OpenTelemetry traces: the OTLP exporter a process installs when
//! `tracing.enabled` is on, and the W3C trace context (`traceparent`) that
//! rides each envelope (`Envelope.trace_context`) from one hop to the next.
//!
//! Spans are `tracing` spans, which `tracing-opentelemetry` turns into
//! OpenTelemetry spans; only the spans of xmppd's own crates are exported.
//! With traces off (the default) no span is made on the per-stanza path:
//! every hop asks [`enabled`] first, one relaxed load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{ExporterBuildError, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{OtlpProtocol, TracingConfig};

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Set once the process exports traces.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are made: what every hop checks first.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// `tracing::info_span!` when traces are on, `Span::none()` (which costs
/// nothing) when they are off: for spans on paths every client takes.
#[macro_export]
macro_rules! traced_span {
    ($($span:tt)+) => {
        if $crate::traces::enabled() {
            ::tracing::info_span!($($span)+)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The span of one hop of a stanza: `$name` (a literal), with the
/// envelope's element name (`xmpp.stanza`) and `type` (`xmpp.type`), never its
/// content. A root until [`hop`] or [`follow`] gives it the previous hop as
/// its parent. With traces off, `Span::none()`.
#[macro_export]
macro_rules! stanza_span {
    ($name:literal, $envelope:expr) => {
        $crate::traced_span!(
            parent: None,
            $name,
            "xmpp.stanza" = $envelope.kind().element_name(),
            "xmpp.type" = %$envelope.r#type,
        )
    };
}

/// Makes `span` the next hop of the trace `carrier` names: its child, or the
/// root of a new trace when `carrier` names none; `carrier` then names
/// `span`, so that whatever is sent on with it (or copied from it) continues
/// the trace. Nothing for no span (traces off).
pub fn hop(span: &Span, carrier: &mut HashMap<String, String>) {
    if span.is_none() {
        return;
    }
    follow(span, carrier);
    carrier.clear();
    inject(span, carrier);
}

/// Makes `span` the child of the span `carrier` names, if it names one:
/// for a span whose context goes no further (a stanza's last hop, a
/// replica's answer to a login call).
pub fn follow(span: &Span, carrier: &HashMap<String, String>) {
    if span.is_none() || carrier.is_empty() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    // Fails only for a span already started, which a new one is not.
    let _ = span.set_parent(parent);
}

/// Writes `span`'s trace context (`traceparent`, `tracestate`) into
/// `carrier`; nothing for a span that is not exported.
fn inject(span: &Span, carrier: &mut HashMap<String, String>) {
    if span.is_none() {
        return;
    }
    TraceContextPropagator::new().inject_context(&span.context(), carrier);
}

/// The trace context of the current span, to send with a call; empty with
/// traces off.
pub fn current() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    if enabled() {
        inject(&Span::current(), &mut carrier);
    }
    carrier
}

/// The tracer provider that exports this process's spans to
/// `config.endpoint` over OTLP, batched, with a parent-based ratio sampler.
/// Runs inside the tokio runtime, which the exporter's connections use.
pub(crate) fn provider(
    config: &TracingConfig,
    service: &str,
    instance: &str,
) -> Result<SdkTracerProvider, ExporterBuildError> {
    let endpoint = config.endpoint_or_default();
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
        OtlpProtocol::Http => SpanExporter::builder()
            .with_http()
            .with_http_client(OnRuntime::current())
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()?,
    };
    let attributes = config
        .attributes
        .iter()
        .map(|(key, value)| KeyValue::new(key.clone(), value.clone()))
        .chain([KeyValue::new("service.instance.id", instance.to_string())]);
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes(attributes)
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// OTLP/HTTP requests sent on the server's runtime: the batch exporter
/// runs on a thread of its own, outside it, and hyper needs the runtime to
/// drive its connections.
#[derive(Debug)]
struct OnRuntime {
    client: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

impl OnRuntime {
    fn current() -> Self {
        OnRuntime {
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                EXPORT_TIMEOUT,
                None,
            ),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
