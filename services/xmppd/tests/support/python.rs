//! Python scripts the tests drive against real servers: third-party
//! clients (slixmpp) and a real browser (selenium with chromium).

use std::path::PathBuf;
use std::process::{Command, Output};

/// Debian's interpreter, where python3-slixmpp and python3-selenium
/// install; not whatever `python3` comes first on PATH.
pub const PYTHON: &str = "/usr/bin/python3";

/// Panics with how to install it unless [`PYTHON`] imports `module`, which
/// the Debian package `package` provides.
#[track_caller]
pub fn require(module: &str, package: &str) {
    let check = Command::new(PYTHON)
        .args(["-c", &format!("import {module}")])
        .output();
    let available = check.as_ref().is_ok_and(|output| output.status.success());
    assert!(
        available,
        "{module} is not importable by {PYTHON} ({}); run the README's test command, \
         which installs {package} (apt-get install {package})",
        match &check {
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(error) => error.to_string(),
        }
    );
}

/// A command running the script `tests/<path>` with [`PYTHON`].
pub fn script(path: &str) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(path);
    let mut command = Command::new(PYTHON);
    command.arg(script);
    command
}

/// Runs `command` off the async threads. The scripts bound every wait
/// themselves, so they always end.
pub async fn run(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("run a Python script")
}
