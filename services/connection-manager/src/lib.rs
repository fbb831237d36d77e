//! The connection-manager: the edge of an xmppd cluster.
//!
//! It accepts client streams (TCP with STARTTLS, direct TLS, WebSocket), negotiates
//! them (TLS, SASL, resource binding), stamps the `from` of every stanza a
//! client sends, and forwards stanzas to a router. It keeps nothing another
//! node could not rebuild: when it dies, its clients reconnect elsewhere and
//! the session replicas clean up after it.
//!
//! # Layout
//! - [`listener`]: what every transport's listener shares: the accept loop,
//!   the connection limits, negotiation and the bound stream;
//!   [`proxy_protocol`]: the client's address from a load balancer's
//!   PROXY v2 header.
//! - [`stream`]: the client-stream trait that everything below is written
//!   against; [`tcp`] (STARTTLS, direct TLS) and [`websocket`] (RFC 7395)
//!   implement it, each with its listener.
//! - [`negotiation`]: RFC 6120 §4-§7 up to a bound resource.
//! - [`auth`]: SASL (SCRAM with channel binding, PLAIN) and its throttles.
//! - [`registration`]: XEP-0077 account creation before authentication, and
//!   password changes, so that passwords stay at the edge.
//! - [`bound_stream`]: a bound client stream: stanzas in, deliveries out, keepalives.
//! - [`cluster`]: router streams (`router_links`), the directory of this
//!   node's bound streams and their mailboxes (`directory`), a login's calls
//!   (`logins`).
//! - [`replicas`]: the session replicas a login calls.
//! - [`stream_management`]: XEP-0198 acks and resumption, for every transport.
//! - [`mailbox`]: the queue of deliveries waiting for one client stream.
//! - [`limits`]: counters and token buckets behind the limits.
//! - [`hints`]: what routing needs to know of a message's content.

pub mod auth;
pub mod bound_stream;
pub mod cluster;
pub mod edge;
pub mod hints;
pub mod limits;
pub mod listener;
pub mod mailbox;
pub mod metrics;
pub mod negotiation;
pub mod proxy_protocol;
pub mod registration;
pub mod replicas;
pub mod stream;
pub mod stream_management;
pub mod tcp;
pub mod websocket;

pub use cluster::Cluster;
pub use edge::{Edge, EdgeSettings, load_decoy_secret};
