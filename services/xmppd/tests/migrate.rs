//! `xmppd migrate` and `storage.migrate`: a server that does not migrate
//! refuses a database whose migrations are not all applied, naming the
//! command that applies them, and runs once `xmppd migrate` has.

mod support;

use std::path::Path;

use support::xmppd;

/// `xmppd user list` against the embedded database in `dir`, with `migrate`.
fn list_users(config: &Path) -> std::process::Output {
    xmppd()
        .arg("--config")
        .arg(config)
        .args(["user", "list"])
        .output()
        .unwrap()
}

#[test]
fn a_server_that_does_not_migrate_needs_xmppd_migrate_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("xmppd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = \"{}\"\n[storage]\nmigrate = false\n",
            dir.path().display()
        ),
    )
    .unwrap();

    let refused = list_users(&config);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("migration 1 (initial) is not applied: run `xmppd migrate` first"),
        "{message}"
    );

    let migrated = xmppd()
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("migrations applied"));

    let listed = list_users(&config);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
