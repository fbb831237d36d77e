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
//! - [`handler`]: dispatch of one frame to presence, IQs and the modules' hooks.
//! - [`presence`], [`subscription`]: RFC 6121 §3-§4.
//! - [`shared_groups`]: shared roster groups, merged into rosters and
//!   presence, and what their changes tell the members' clients.
//! - [`module`]: [`module::AccountModule`], the seam every account-side
//!   feature plugs into; [`modules`]: the features (roster, disco, offline
//!   storage, blocking, carbons…), one file or folder each.
//! - [`iq`]: hands a get or set to the module that answers it.
//! - [`reaper`]: cleans up after connection-managers that died.
//! - [`outbox`]: the frames a handler emits.
//! - [`muc`]: the multi-user chat service (XEP-0045), for the rooms the
//!   replica owns.

pub mod clock;
pub mod handler;
pub mod iq;
pub mod metrics;
pub mod module;
pub mod modules;
pub mod muc;
pub mod outbox;
pub mod presence;
pub mod reaper;
pub mod service;
pub mod shards;
pub mod shared_groups;
pub mod subscription;

pub use service::{SessionService, Settings};
