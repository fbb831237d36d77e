//! The pool, its URL, and the setup every new connection gets.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use std::sync::Arc;

use xmppd_metrics::Calls;

use crate::calls::SqlOperation;
use crate::credential_cache::{CredentialCache, CredentialCaching};
use crate::migrations::{self, Schema};
use crate::{CacheStatistics, StoreError};

/// A Postgres connection idle for longer than this is pinged before it is lent out, since the
/// server (restarted, or a proxy or firewall in between) may have closed it meanwhile. One
/// used a moment ago is alive: pinging it too would cost every query a round trip, and after
/// a restart every connection has been idle for longer than this by the time Postgres is back.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Handle on the database: cheap to clone, all clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    backend: Backend,
    /// Kept for connections of the store's own, outside the pool.
    url: Arc<str>,
    pub(crate) credential_cache: Option<Arc<CredentialCache>>,
    /// Every method's queries, timed by operation.
    pub(crate) calls: Calls<SqlOperation>,
    /// What [`Store::migrate`] does for each schema.
    migrations: Migrations,
}

/// What opening a store does with its schemas' migrations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Applies those not applied yet.
    Apply,
    /// Applies none, and fails unless every one has been (by `xmppd migrate`, run with
    /// a database role allowed to change the schema, before the servers start).
    Check,
}

/// Applied to every SQLite connection: the Any driver only passes the URL through, so these
/// cannot be set as `SqliteConnectOptions`. WAL lets readers run beside the one writer;
/// `synchronous = NORMAL` is durable in WAL mode except on power loss of the last commits.
/// SQLite's own page cache defaults to 2 MiB per connection, 20 MiB for a full pool, for
/// pages the operating system caches anyway: 256 KiB each keeps the index pages that logins
/// and roster reads walk.
const SQLITE_PRAGMAS: &[&str] = &[
    "PRAGMA busy_timeout = 5000",
    "PRAGMA cache_size = -256",
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
];

/// How many connections a store's pool holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSize {
    /// The most it opens.
    pub max: NonZeroU32,
    /// How many it opens at once and keeps open, idle or not (capped at `max`): a
    /// burst of load then finds them ready instead of waiting for new ones (for
    /// Postgres, a backend forked and authenticated each).
    pub min: u32,
}

impl PoolSize {
    /// Up to `max`, opened as the load asks for them and closed when idle.
    pub fn on_demand(max: NonZeroU32) -> PoolSize {
        PoolSize { max, min: 0 }
    }
}

/// What a database URL designates, once checked.
enum Target {
    Postgres,
    SqliteFile(PathBuf),
    SqliteMemory,
}

impl Store {
    /// Connects to `postgres://...`, `sqlite://path/to/file.db` (file and parent folders are
    /// created when missing) or `sqlite::memory:`, then runs pending migrations. At most
    /// `max_connections` are opened, as the load asks for them (`sqlite::memory:` always
    /// has one: each connection would be a database of its own).
    pub async fn connect(url: &str, max_connections: NonZeroU32) -> Result<Store, StoreError> {
        Store::connect_pool(url, PoolSize::on_demand(max_connections)).await
    }

    /// As [`Store::connect`], with `pool.min` connections kept open from the start.
    pub async fn connect_pool(url: &str, pool: PoolSize) -> Result<Store, StoreError> {
        Store::open(url, pool, Migrations::Apply).await
    }

    /// As [`Store::connect_pool`], with the core tables' migrations applied or checked as
    /// `migrations` says, and so are those of [`Store::migrate`] later.
    pub async fn open(
        url: &str,
        pool: PoolSize,
        migrations: Migrations,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let target = Target::parse(url)?;
        let (backend, url) = match &target {
            Target::Postgres => (Backend::Postgres, url.to_owned()),
            Target::SqliteFile(path) => {
                create_parent(path)?;
                (Backend::Sqlite, create_if_missing(url))
            }
            Target::SqliteMemory => (Backend::Sqlite, url.to_owned()),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = pool_options(&target, pool).connect_with(options).await?;
        migrate(backend, &pool, &migrations::CORE, migrations).await?;
        tracing::debug!(?backend, ?migrations, "store connected");
        Ok(Store {
            pool,
            backend,
            url: url.into(),
            credential_cache: None,
            calls: Calls::new(),
            migrations,
        })
    }

    /// Serves [`Store::credentials`] from memory, kept until Postgres says they changed
    /// (`credential_cache.rs`). Postgres only: a SQLite store is returned as it is, since
    /// nothing would tell it of another process's writes. Call it from within a Tokio
    /// runtime; the store listens on a connection of its own until its last clone is dropped.
    pub fn cache_credentials(self, caching: CredentialCaching) -> Store {
        if self.backend != Backend::Postgres {
            return self;
        }
        let cache = CredentialCache::start(&self.url, caching);
        Store {
            credential_cache: Some(Arc::new(cache)),
            ..self
        }
    }

    /// Hits, misses and invalidations of the credential cache; `None` without one.
    pub fn credential_cache_statistics(&self) -> Option<CacheStatistics> {
        self.credential_cache
            .as_ref()
            .map(|cache| cache.cache().statistics())
    }

    /// Exports the store's calls by operation: `xmppd_store_call_seconds` and
    /// `xmppd_store_call_errors_total`.
    pub fn register_metrics(&self, metrics: &mut prometheus_client::registry::Registry) {
        self.calls
            .register(metrics, "xmppd_store", "the SQL store (Postgres or SQLite)");
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Creates or migrates the tables of a part of the server that keeps its own (an
    /// account module): idempotent, and safe while other processes do the same. A store
    /// opened with [`Migrations::Check`] only checks that they are.
    pub async fn migrate(&self, schema: &'static Schema) -> Result<(), StoreError> {
        migrate(self.backend, &self.pool, schema, self.migrations).await?;
        tracing::debug!(schema = schema.name, migrations = ?self.migrations, "schema ready");
        Ok(())
    }

    /// The pool, for the queries of a module's own tables (see [`Store::migrate`]). Queries
    /// go through sqlx's `Any` driver, written once for both backends as this crate's are.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Waits for the connections in use to be returned, then closes them all: call on shutdown
    /// so that SQLite checkpoints its WAL and Postgres sees clean disconnects.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

impl Target {
    fn parse(url: &str) -> Result<Target, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres);
        }
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            // Not the URL itself: it may hold a password.
            let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
            return Err(StoreError::InvalidUrl(format!(
                "scheme {scheme:?}: expected postgres://, sqlite://FILE or sqlite::memory:"
            )));
        };
        let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
        if database == ":memory:" || params.split('&').any(|p| p == "mode=memory") {
            return Ok(Target::SqliteMemory);
        }
        if database.is_empty() {
            return Err(StoreError::InvalidUrl(format!("{url:?}: no file name")));
        }
        // Let sqlx resolve the file name (percent-decoding) so that we create the very folder
        // it will open.
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::InvalidUrl(format!("{url:?}: {err}")))?;
        Ok(Target::SqliteFile(options.get_filename().to_owned()))
    }
}

fn create_parent(path: &std::path::Path) -> Result<(), StoreError> {
    match path.parent() {
        // Once at start-up, so the blocking call costs nothing worth a thread hop.
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent)
            .map_err(|err| StoreError::Database(sqlx::Error::Io(err))),
        _ => Ok(()),
    }
}

/// Adds `mode=rwc` unless the caller chose a mode (read-only, say).
fn create_if_missing(url: &str) -> String {
    match url.split_once('?') {
        Some((_, params)) if params.split('&').any(|p| p.starts_with("mode=")) => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    }
}

fn pool_options(target: &Target, pool: PoolSize) -> AnyPoolOptions {
    // sqlx pings every connection before lending it out unless told otherwise: a round trip
    // to the database before every query.
    let options = AnyPoolOptions::new()
        .max_connections(pool.max.get())
        .min_connections(pool.min)
        .test_before_acquire(false);
    match target {
        Target::Postgres => {
            options.before_acquire(|conn, meta| Box::pin(ping_if_idle(conn, meta.idle_for)))
        }
        // sqlx gives each connection to `:memory:` a database of its own, so the pool must hold
        // exactly one connection and never recycle it, or data would vanish.
        Target::SqliteMemory => with_sqlite_pragmas(
            options
                .max_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
        ),
        // A SQLite connection is a file opened in this process, with no far end that could
        // have gone away: nothing to ping.
        Target::SqliteFile(_) => with_sqlite_pragmas(options),
    }
}

/// Whether a pooled connection may be lent out; a failed ping makes the pool drop it and
/// lend another.
async fn ping_if_idle(conn: &mut AnyConnection, idle_for: Duration) -> Result<bool, sqlx::Error> {
    if idle_for >= PING_AFTER_IDLE {
        conn.ping().await?;
    }
    Ok(true)
}

fn with_sqlite_pragmas(options: AnyPoolOptions) -> AnyPoolOptions {
    options.after_connect(|conn, _meta| {
        Box::pin(async move {
            for pragma in SQLITE_PRAGMAS {
                conn.execute(*pragma).await?;
            }
            Ok(())
        })
    })
}

/// Now as unix milliseconds, the unit of every time column.
pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Runs pending migrations. Postgres serialises concurrent migrators with an
/// advisory lock; SQLite has none, so when two processes open a new database
/// at once (a server starting while `xmppd user add` runs), the loser fails
/// on a table the winner just created. It then finds the migration applied
/// on a second look.
async fn migrate(
    backend: Backend,
    pool: &AnyPool,
    schema: &'static Schema,
    migrations: Migrations,
) -> Result<(), StoreError> {
    let migrator = migrations::migrator(backend, schema).await?;
    if migrations == Migrations::Check {
        return check_applied(pool, schema, &migrator).await;
    }
    let mut attempts = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if backend == Backend::Sqlite && attempts < 5 => {
                attempts += 1;
                tracing::debug!(%error, attempts, "migration raced another process, retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Fails, naming the first, unless every migration of `schema` has been applied. Newer
/// ones than the binary knows are fine: migrations only add (docs/operations.md), so an
/// older server runs on a newer schema during a rolling upgrade or after a rollback.
async fn check_applied(
    pool: &AnyPool,
    schema: &'static Schema,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), StoreError> {
    use sqlx::migrate::Migrate;
    let mut connection = pool.acquire().await?;
    // No history table yet: nothing was applied.
    let applied = connection
        .list_applied_migrations()
        .await
        .unwrap_or_default();
    let missing = migrator
        .iter()
        .find(|migration| !applied.iter().any(|done| done.version == migration.version));
    match missing {
        None => Ok(()),
        Some(migration) => Err(StoreError::SchemaBehind(format!(
            "{} migration {} ({}) is not applied: run `xmppd migrate` first",
            schema.name, migration.version, migration.description
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_classified() {
        assert!(matches!(
            Target::parse("postgres://root@host/db"),
            Ok(Target::Postgres)
        ));
        assert!(matches!(
            Target::parse("sqlite::memory:"),
            Ok(Target::SqliteMemory)
        ));
        assert!(matches!(
            Target::parse("sqlite://?mode=memory"),
            Ok(Target::SqliteMemory)
        ));
        match Target::parse("sqlite://data/my%20db.sqlite") {
            Ok(Target::SqliteFile(path)) => assert_eq!(path, PathBuf::from("data/my db.sqlite")),
            _ => panic!("expected a file"),
        }
        assert!(matches!(
            Target::parse("mysql://x"),
            Err(StoreError::InvalidUrl(_))
        ));
        assert!(matches!(
            Target::parse("sqlite://"),
            Err(StoreError::InvalidUrl(_))
        ));
    }

    #[test]
    fn create_mode_is_added_only_when_no_mode_is_given() {
        assert_eq!(create_if_missing("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            create_if_missing("sqlite://a.db?cache=private"),
            "sqlite://a.db?cache=private&mode=rwc"
        );
        assert_eq!(
            create_if_missing("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }
}
