//! Migrations embedded in the binary.
//!
//! `sqlx::migrate!` would need sqlx's `macros` feature, which compiles sqlx and both database
//! drivers a second time as proc-macro dependencies; a list of `include_str!` costs nothing.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};

use crate::store::Backend;

/// One numbered file present in both `migrations/postgres` and `migrations/sqlite`.
struct Embedded {
    version: i64,
    /// File stem, `<version>_<description>`, as sqlx's own file naming.
    stem: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
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

/// Append new files here, in both folders; never edit an applied one (sqlx checks checksums).
const MIGRATIONS: &[Embedded] = embed![
    1 => "0001_initial",
    2 => "0002_credential_notifications",
];

#[derive(Debug)]
struct Source(Backend);

impl MigrationSource<'static> for Source {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        Box::pin(async move { Ok(MIGRATIONS.iter().map(|m| m.migration(self.0)).collect()) })
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

pub(crate) async fn migrator(backend: Backend) -> Result<Migrator, sqlx::migrate::MigrateError> {
    Migrator::new(Source(backend)).await
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

    /// A file dropped into a folder but not listed in `MIGRATIONS` would silently never run.
    #[test]
    fn every_migration_file_is_embedded_for_both_backends() {
        let embedded: Vec<String> = MIGRATIONS.iter().map(|m| m.stem.to_owned()).collect();
        assert_eq!(stems_in("migrations/postgres"), embedded);
        assert_eq!(stems_in("migrations/sqlite"), embedded);
        for m in MIGRATIONS {
            assert!(
                m.stem.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.stem
            );
        }
    }
}
