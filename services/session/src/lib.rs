//! The session service: everything the server does for an account.
//!
//! A session replica is stateless: accounts, rosters and offline messages
//! live in the store (Postgres or SQLite), bound resources and presence in
//! the registry (Redis or memory). Routers send each replica the frames of
//! the accounts it owns; the replica runs them one account at a time, in
//! order, and sends back the stanzas they produce for routing.
//!
//! # Layout
//! - [`service`]: the gRPC `Session` service (streams, bind, credentials).
//! - [`shards`]: per-account serialisation and acknowledgements.
//! - [`handler`]: dispatch of one frame to the handlers below.
//! - [`presence`], [`subscription`]: RFC 6121 §3-§4.
//! - [`roster`]: RFC 6121 §2 and XEP-0237 versioning.
//! - [`iq`]: disco, version, last activity, time, ping, registration.
//! - [`offline`]: XEP-0160 storage and delivery with XEP-0203 stamps.
//! - [`reaper`]: cleans up after connection-managers that died.
//! - [`outbox`]: the frames a handler emits.

pub mod clock;
pub mod handler;
pub mod iq;
pub mod metrics;
pub mod offline;
pub mod outbox;
pub mod presence;
pub mod reaper;
pub mod roster;
pub mod service;
pub mod shards;
pub mod subscription;

pub use service::{SessionService, Settings};
