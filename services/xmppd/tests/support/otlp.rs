//! A real OTLP trace receiver on loopback, over gRPC or HTTP, what a
//! collector (the OpenTelemetry Collector, Jaeger, Tempo) is to xmppd's
//! exporters: it keeps every span exported to it, with the resource that
//! exported it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One span as received, with the resource of the process that sent it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for the root of a trace.
    pub parent_span_id: Vec<u8>,
    /// The resource's `service.name`.
    pub service: String,
    /// The resource's `service.instance.id`.
    pub instance: String,
    /// The resource's string attributes, those two included.
    pub resource: Vec<(String, String)>,
    /// The span's string attributes.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        find(&self.attributes, key)
    }

    pub fn resource_attribute(&self, key: &str) -> Option<&str> {
        find(&self.resource, key)
    }

    /// A stanza hop's span for a stanza of this element and type.
    pub fn is_stanza(&self, element: &str, stanza_type: &str) -> bool {
        self.attribute("xmpp.stanza") == Some(element)
            && self.attribute("xmpp.type") == Some(stanza_type)
    }
}

fn find<'a>(attributes: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// The receiver; clones share the spans received.
#[derive(Clone, Default)]
pub struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Collector {
    /// Serves `TraceService/Export` on a free loopback port until the
    /// test's runtime ends; the address is the endpoint to export to.
    pub async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let collector = Collector::default();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpIncoming::from(listener));
        tokio::spawn(server);
        (collector, address)
    }

    /// Serves OTLP/HTTP (protobuf bodies) on `/v1/traces` of a free
    /// loopback port until the test's runtime ends.
    pub async fn start_http() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let collector = Collector::default();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export_http))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, address)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until a span satisfies `wanted`, and returns it.
    pub async fn wait_for(
        &self,
        what: &str,
        wanted: impl Fn(&ReceivedSpan) -> bool,
    ) -> ReceivedSpan {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(span) = self.spans().into_iter().find(&wanted) {
                return span;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} among the spans received: {:#?}",
                self.spans()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The span named `name` whose parent is `parent`, in `parent`'s trace:
    /// the next hop.
    pub async fn next_hop(&self, parent: &ReceivedSpan, name: &str) -> ReceivedSpan {
        self.wait_for(&format!("{name} span under {parent:?}"), |span| {
            span.name == name
                && span.trace_id == parent.trace_id
                && span.parent_span_id == parent.span_id
        })
        .await
    }

    fn record(&self, request: ExportTraceServiceRequest) {
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let resource = resource_spans
                .resource
                .map(|resource| strings(&resource.attributes))
                .unwrap_or_default();
            let of_resource = |key: &str| find(&resource, key).unwrap_or_default().to_string();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                received.push(ReceivedSpan {
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    service: of_resource("service.name"),
                    instance: of_resource("service.instance.id"),
                    resource: resource.clone(),
                    attributes: strings(&span.attributes),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.record(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn export_http(
    State(collector): State<Collector>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, StatusCode> {
    let request = ExportTraceServiceRequest::decode(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    collector.record(request);
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(([(header::CONTENT_TYPE, "application/x-protobuf")], answer))
}

/// The attributes whose values are strings.
fn strings(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .filter_map(|attribute| match &attribute.value.as_ref()?.value {
            Some(any_value::Value::StringValue(value)) => {
                Some((attribute.key.clone(), value.clone()))
            }
            _ => None,
        })
        .collect()
}
