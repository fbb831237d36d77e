//! What every xmppd service shares, so that each one starts, logs, reports
//! and stops the same way.
//!
//! # Layout
//! - [`config`]: the configuration schema (one TOML file per service, every
//!   key overridable by an environment variable) and its loader.
//! - [`telemetry`]: the `tracing` subscriber: log lines (text or JSON) and
//!   the spans exported when traces are on.
//! - [`observability`]: the HTTP endpoint with `/metrics` (Prometheus),
//!   `/healthz` and `/readyz`.
//! - [`traces`]: the OTLP exporter, and the trace context that envelopes
//!   carry from one service to the next.
//! - [`reload`]: the configuration read again on SIGHUP or when its file
//!   changes, and the settings that follow it.
//! - [`shutdown`]: SIGINT/SIGTERM turned into a signal every task can watch.

pub mod config;
pub mod observability;
pub mod reload;
pub mod shutdown;
pub mod telemetry;
pub mod traces;

pub use config::Config;
