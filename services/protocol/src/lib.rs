//! XMPP protocol types for xmppd: JIDs, the XML stream parser, stanzas and protocol errors.
//! Pure protocol: this crate knows nothing about gRPC, storage or networking.
//!
//! # Layout
//!
//! - [`jid`]: RFC 7622 addresses, normalised on parse (`Jid`), and the borrowed view the
//!   cluster reads its normalised addresses through (`JidRef`).
//! - [`stanza_type`]: the `type` of messages and IQs, with the RFC 6121 §8 decisions that
//!   depend on it, written once for the router and the session replicas.
//! - [`stream`]: the incremental stream parser. A resumable scan (`framer`) finds each
//!   top-level element and enforces the limits as bytes arrive; the element is then validated
//!   (`validate`, over quick-xml) and split off the buffer without copying.
//! - [`stanza`]: a stanza is its raw bytes plus the start tag's routing attributes (read by
//!   `tag`); no DOM on the forwarding path. Also `from` stamping and error replies.
//! - [`xml`]: a small owned DOM for the handlers that need one, and escaping.
//! - [`error`]: stream and stanza error conditions (RFC 6120 §4.9, §8.3).
//! - [`ns`]: namespace names.
//!
//! Parsing never panics: malformed input becomes a [`error::StreamError`].

mod framer;
mod tag;
mod validate;

pub mod error;
pub mod jid;
pub mod ns;
pub mod stanza;
pub mod stanza_type;
pub mod stream;
pub mod xml;

pub use error::{ErrorType, StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition};
pub use jid::{Jid, JidError, JidRef};
pub use stanza::{Stanza, error_reply};
pub use stanza_type::{Fanout, IqType, MessageType, Unclaimed};
pub use stream::{Limits, StreamEvent, StreamHeader, StreamParser};
pub use xml::{Element, Node, ParseError};
