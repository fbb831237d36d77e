//! A real Prometheus (Debian's `prometheus` package) that scrapes test
//! nodes, queried through its HTTP API, and `promtool`, which checks the
//! alert rules the Helm chart ships.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::http_get;

/// The Prometheus programs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub prometheus: PathBuf,
    pub promtool: PathBuf,
}

/// `prometheus` and `promtool` from `PATH`, installed with apt-get first when
/// missing (as `.ci/test` does on a fresh machine). `None`, with the reason
/// printed, only when they are missing and cannot be installed: the caller
/// then skips its test.
pub fn tools() -> Option<Tools> {
    // Once per test binary: tests running in parallel must not run apt-get twice.
    static TOOLS: OnceLock<Option<Tools>> = OnceLock::new();
    TOOLS.get_or_init(find_or_install).clone()
}

fn find_or_install() -> Option<Tools> {
    if let Some(tools) = find() {
        return Some(tools);
    }
    eprintln!("prometheus is not installed: trying `apt-get install -y prometheus`");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-q", "prometheus"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    match (installed, find()) {
        (_, Some(tools)) => Some(tools),
        (outcome, None) => {
            eprintln!(
                "SKIPPED: prometheus and promtool are not on PATH and could not be installed \
                 ({outcome:?}); install Debian's `prometheus` package to run this test"
            );
            None
        }
    }
}

fn find() -> Option<Tools> {
    Some(Tools {
        prometheus: on_path("prometheus")?,
        promtool: on_path("promtool")?,
    })
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs `promtool` with `args`, failing the test with its output unless it
/// succeeds.
pub fn promtool(tools: &Tools, args: &[&str], dir: &Path) {
    let output = Command::new(&tools.promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Prometheus server on loopback with a folder of its own; killed when
/// dropped.
pub struct Prometheus {
    child: Child,
    pub address: SocketAddr,
    dir: tempfile::TempDir,
}

/// One series of a query's answer.
#[derive(Debug)]
pub struct Sample {
    pub labels: HashMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    /// Scrapes each `(node, address)` every second as job `xmppd`, the node
    /// in the label `node`.
    pub fn start(tools: &Tools, targets: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: xmppd\n    static_configs:\n",
        );
        for (node, address) in targets {
            config.push_str(&format!(
                "      - targets: ['{address}']\n        labels: {{node: '{node}'}}\n"
            ));
        }
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write the config");
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(&tools.prometheus)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            address,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The answer to an instant query; `None` until Prometheus answers.
    pub async fn query(&self, expr: &str) -> Option<Vec<Sample>> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (status, body) = http_get(self.address, &path).await?;
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        let series = answer["data"]["result"].as_array()?;
        series
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()?
                    .iter()
                    .map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
                    .collect::<Option<HashMap<_, _>>>()?;
                let value = series["value"][1].as_str()?.parse().ok()?;
                Some(Sample { labels, value })
            })
            .collect()
    }

    /// Waits (bounded) until `expr` answers exactly `series` series, and
    /// returns them.
    pub async fn expect_series(&self, expr: &str, series: usize) -> Vec<Sample> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.query(expr).await;
            if let Some(samples) = last.take_if(|samples| samples.len() == series) {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!(
            "`{expr}` did not answer {series} series; last answer: {last:?}\nprometheus log:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` as a URL query value.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
