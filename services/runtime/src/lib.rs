//! What every xmppd service shares, so that each one starts, logs, reports
//! and stops the same way.
//!
//! # Layout
//! - [`config`]: the configuration schema (one TOML file per service, every
//!   key overridable by an environment variable) and its loader.
//! - [`observability`]: logging through `tracing`, and the HTTP endpoint with
//!   `/metrics` (Prometheus), `/healthz` and `/readyz`.
//! - [`shutdown`]: SIGINT/SIGTERM turned into a signal every task can watch.

pub mod config;
pub mod observability;
pub mod shutdown;

pub use config::Config;
