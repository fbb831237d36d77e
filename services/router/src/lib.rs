//! The router: the stanza switch of an xmppd cluster.
//!
//! Connection-managers attach to every router with one stream each; the
//! router decides for each envelope, from its header alone and never from the
//! XML, where it goes next: a bound resource (looked up in the session
//! registry), the session replica that owns the account, or back to the
//! sender as an error.
//!
//! # Layout
//! - [`routing`]: the RFC 6121 §8 rules as pure functions.
//! - [`policy`]: the accounts' policies (XEP-0191 blocking, XEP-0280
//!   carbons) as pure functions of the same headers and look-ups.
//! - [`edges`]: the attached connection-managers.
//! - [`replicas`]: streams to the session replicas, ownership, acknowledgements.
//! - [`service`]: the gRPC `Router` service and the routing loop.

pub mod edges;
pub mod metrics;
pub mod policy;
pub mod replicas;
pub mod routing;
pub mod service;

pub use service::RouterService;
