//! Migrations embedded in the binary: the core tables' (`migrations/`), and those of each
//! account module's tables, which the module declares as a [`Schema`] beside its code.
//!
//! `sqlx::migrate!` would need sqlx's `macros` feature, which compiles sqlx and both database
//! drivers a second time as proc-macro dependencies; a list of `include_str!` costs nothing.
//!
//! All schemas share sqlx's one history table, so versions must not collide: the core's are
//! numbered 1, 2, 3…, a module's by the day they were written, `YYYYMMDDNN`. Each schema's
//! migrator ignores the versions of the others in that table.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::store::Backend;

/// The tables of one part of the server, and how they came to be.
#[derive(Debug)]
pub struct Schema {
    /// For logs and errors.
    pub name: &'static str,
    /// In version order; append, never edit an applied one (sqlx checks checksums).
    pub migrations: &'static [Embedded],
}

/// One migration, in both dialects.
#[derive(Debug)]
pub struct Embedded {
    pub version: i64,
    /// File stem, `<version>_<description>`, as sqlx's own file naming.
    pub stem: &'static str,
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

macro_rules! embed {
    ($($version:literal => $stem:literal),* $(,)?) => {
        &[$(Embedded {
            version: $version,
            stem: $stem,
            postgres: include_str!(concat!("../migrations/postgres/", $stem, ".sql")),
            sqlite: include_str!(concat!("../migrations/sqlite/", $stem, ".sql")),
        }),*]
    };
}

/// The core tables. Append new files here, in both folders.
pub(crate) const CORE: Schema = Schema {
    name: "core",
    migrations: embed![
        1 => "0001_initial",
        2 => "0002_credential_notifications",
        3 => "0003_shared_groups",
    ],
};

/// What a migration must not do: old servers run on the new schema during a
/// rolling upgrade and after a rollback, so a migration only adds (tables,
/// nullable or defaulted columns, indexes, triggers); removing or changing
/// what an old server reads waits for a release that no longer reads it.
const NOT_EXPAND_ONLY: &[&str] = &[
    "DROP TABLE",
    "DROP COLUMN",
    "RENAME",
    "ALTER COLUMN",
    "SET NOT NULL",
    "TRUNCATE",
    "DELETE FROM",
];

impl Schema {
    /// The first statement in any of its migrations that an older server
    /// running beside the newer one could not live with (see
    /// [`NOT_EXPAND_ONLY`]), as `(stem, statement)`.
    pub fn first_contraction(&self) -> Option<(&'static str, &'static str)> {
        self.migrations.iter().find_map(|migration| {
            let sql = format!("{}\n{}", migration.postgres, migration.sqlite).to_uppercase();
            let sql = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            NOT_EXPAND_ONLY
                .iter()
                .find(|statement| sql.contains(*statement))
                .map(|statement| (migration.stem, *statement))
        })
    }
}

#[derive(Debug)]
struct Source(Backend, &'static Schema);

impl MigrationSource<'static> for Source {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let Source(backend, schema) = self;
        Box::pin(async move {
            Ok(schema
                .migrations
                .iter()
                .map(|m| m.migration(backend))
                .collect())
        })
    }
}

impl Embedded {
    fn migration(&self, backend: Backend) -> Migration {
        let sql = match backend {
            Backend::Postgres => self.postgres,
            Backend::Sqlite => self.sqlite,
        };
        let description = self.stem.split_once('_').map_or(self.stem, |(_, d)| d);
        Migration::new(
            self.version,
            Cow::Owned(description.replace('_', " ")),
            MigrationType::Simple,
            Cow::Borrowed(sql),
            false,
        )
    }
}

pub(crate) async fn migrator(
    backend: Backend,
    schema: &'static Schema,
) -> Result<Migrator, sqlx::migrate::MigrateError> {
    let mut migrator = Migrator::new(Source(backend, schema)).await?;
    migrator.set_ignore_missing(true);
    Ok(migrator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stems_in(folder: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let mut stems: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        stems.sort();
        stems
    }

    #[test]
    fn the_core_migrations_only_add() {
        assert_eq!(CORE.first_contraction(), None);
    }

    #[test]
    fn a_dropped_column_is_a_contraction() {
        const DROPS: Schema = Schema {
            name: "drops",
            migrations: &[Embedded {
                version: 9,
                stem: "0009_drop",
                postgres: "ALTER TABLE users\n  DROP   COLUMN x;",
                sqlite: "ALTER TABLE users DROP COLUMN x;",
            }],
        };
        assert_eq!(
            DROPS.first_contraction(),
            Some(("0009_drop", "DROP COLUMN"))
        );
    }

    /// A file dropped into a folder but not listed in `MIGRATIONS` would silently never run.
    #[test]
    fn every_migration_file_is_embedded_for_both_backends() {
        let embedded: Vec<String> = CORE.migrations.iter().map(|m| m.stem.to_owned()).collect();
        assert_eq!(stems_in("migrations/postgres"), embedded);
        assert_eq!(stems_in("migrations/sqlite"), embedded);
        for m in CORE.migrations {
            assert!(
                m.stem.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.stem
            );
        }
    }
}
