//! Persistent data of the XMPP server (accounts, SCRAM credentials, rosters, shared roster
//! groups, offline messages, last activity) over sqlx, with one code path for Postgres and SQLite.
//!
//! # Layout
//!
//! - [`Store`] (`store.rs`): the connection pool, URL handling, SQLite pragmas, migrations on
//!   connect. Queries go through the sqlx `Any` driver, so each method is written once: `$n`
//!   placeholders, `ON CONFLICT` upserts, `RETURNING`, times as BIGINT unix milliseconds,
//!   booleans as 0/1 integers.
//! - `migrations.rs`: the SQL files of `migrations/postgres` and `migrations/sqlite`, embedded in
//!   the binary. Both folders hold the same numbered files; only the DDL dialect differs.
//! - `accounts.rs`, `roster.rs`, `groups.rs`, `offline.rs`: the queries, one module per concern.
//! - [`Schema`], [`Store::migrate`], [`Store::pool`]: the seam for an account module's own
//!   tables: the module declares its migrations (both dialects) beside its code, the store
//!   applies them, and the module's queries use the pool. Its rows reference `accounts`
//!   with `ON DELETE CASCADE`, so that deleting an account deletes them.
//! - `calls.rs`: the operations [`Store::register_metrics`] times (`xmppd_store_call_seconds`).
//! - `credential_cache.rs`: a session replica's cache of SCRAM credentials, which Postgres
//!   invalidates ([`Store::cache_credentials`]).
//!
//! # Concurrency
//!
//! The router gives each bare JID one owning session replica, so writes for one account are
//! already serialised; multi-statement operations still run in transactions so that a crash
//! never leaves half an operation behind. Every write transaction starts with a write, because
//! a SQLite transaction that reads first and then writes fails at once (no busy wait) when
//! another connection wrote in between.

mod accounts;
mod calls;
mod credential_cache;
mod groups;
mod migrations;
mod offline;
mod roster;
mod store;

pub use accounts::{AccountEntry, Credential};
pub use credential_cache::CredentialCaching;
pub use groups::{SharedContact, SharedGroup};
pub use migrations::{Embedded as Migration, Schema};
pub use offline::{LastActivity, OfflineMessage};
pub use roster::{InvalidSubscription, Roster, RosterItem, Subscription};
pub use store::{Backend, Migrations, PoolSize, Store};
pub use xmppd_cache::CacheStatistics;

/// Everything a [`Store`] method can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    #[error("database schema behind this version: {0}")]
    SchemaBehind(String),
}

/// Reports a value read from the database that the schema should have prevented.
fn decode_error(err: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(err))
}
