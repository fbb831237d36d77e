//! A session replica's cache of SCRAM credentials, which Postgres
//! invalidates.
//!
//! Every login reads its account's credentials, and most logins are of
//! accounts that logged in a little while ago (mobile clients reconnect all
//! day). So a replica keeps what it read, as ejabberd keeps its accounts in
//! memory, and Postgres tells it when any of them changes:
//!
//! - Migration 0002 puts a trigger on `credentials` that sends
//!   `NOTIFY xmppd_credentials, '<bare JID>'` for every row inserted,
//!   updated or deleted, whoever writes it: a replica (password change,
//!   account removal), the admin CLI, an operator's own SQL. Postgres
//!   delivers it when the transaction commits, to every listener.
//! - The cache listens on a connection of its own and drops the account
//!   named; a replica that made the change itself drops it at once, without
//!   waiting for the notification (see `accounts.rs`).
//! - The rules of [`xmppd_cache::Cache`] hold: a read overtaken by a
//!   notification is not kept, entries live at most the ttl, and while the
//!   listening connection is down the cache is suspended, so every login
//!   reads Postgres. A connection that died silently (no reset reaches us)
//!   is noticed by a ping after `PING_AFTER_QUIET` without notifications.
//! - Accounts that do not exist are not cached: a registration would have to
//!   wait for its notification before the new account could log in.
//!
//! What remains: a change reaches other replicas one notification later
//! than its commit (well under a millisecond on one network), so a login
//! that far behind a password change may still pass with the old password.
//!
//! SQLite has no notifications between processes (the admin CLI writes the
//! file the server reads), so an embedded store is never cached.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Executor;
use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use xmppd_cache::Cache;

use crate::Credential;

/// The channel of migration 0002's trigger.
const CHANNEL: &str = "xmppd_credentials";
/// How long the listening connection may stay silent before it is pinged.
const PING_AFTER_QUIET: Duration = Duration::from_secs(5);
/// How long a ping may take before the connection counts as dead.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to listen again after the connection failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How many accounts' credentials a replica keeps, and for how long at most.
#[derive(Clone, Copy, Debug)]
pub struct CredentialCaching {
    pub entries: NonZeroUsize,
    pub ttl: Duration,
}

/// Shared by every clone of one [`Store`](crate::Store).
#[derive(Debug)]
pub(crate) struct CredentialCache {
    cache: Arc<Cache<Vec<Credential>>>,
    /// Dropped with the last clone of the store, which ends the listener.
    _listening: oneshot::Sender<Infallible>,
}

impl CredentialCache {
    /// A suspended cache, and the task that resumes it once it listens on
    /// `url` and then applies the notifications.
    pub(crate) fn start(url: &str, caching: CredentialCaching) -> Self {
        let cache = Arc::new(Cache::new(caching.entries.get(), caching.ttl));
        cache.suspend();
        let (listening, stopped) = oneshot::channel();
        tokio::spawn(follow(url.to_owned(), cache.clone(), stopped));
        CredentialCache {
            cache,
            _listening: listening,
        }
    }

    pub(crate) fn cache(&self) -> &Cache<Vec<Credential>> {
        &self.cache
    }
}

/// Listens until the store is dropped, again after every failure.
async fn follow(
    url: String,
    cache: Arc<Cache<Vec<Credential>>>,
    stopped: oneshot::Receiver<Infallible>,
) {
    let listening = async {
        loop {
            let Err(error) = listen(&url, &cache).await;
            cache.suspend();
            tracing::warn!(%error, "credential notifications lost, logins read Postgres until they are back");
            tokio::time::sleep(RETRY_AFTER).await;
        }
    };
    tokio::select! {
        _ = stopped => {}
        () = listening => {}
    }
}

/// Resumes the cache once listening, then applies every notification until
/// the connection fails.
async fn listen(url: &str, cache: &Cache<Vec<Credential>>) -> Result<Infallible, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    // sqlx would listen again on a new connection by itself, inside a
    // receive that our timeout may cut short, and the loss would go
    // unreported; here every loss suspends the cache until this listens anew.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    cache.resume();
    tracing::debug!("listening for credential changes");
    loop {
        // sqlx reads a notification whole or not at all, so a wait cut short
        // by the timeout loses nothing.
        match tokio::time::timeout(PING_AFTER_QUIET, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => cache.invalidate([notification.payload()]),
            Ok(Ok(None)) => return Err(lost("the listening connection was lost")),
            Ok(Err(error)) => return Err(error),
            Err(_quiet) => ping(&mut listener).await?,
        }
    }
}

async fn ping(listener: &mut PgListener) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(PING_TIMEOUT, listener.execute("SELECT 1")).await {
        Ok(result) => result.map(drop),
        Err(_) => Err(lost("the listening connection did not answer a ping")),
    }
}

fn lost(what: &'static str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        what,
    ))
}
