//! The JSON report, its exact merge across workers, and the human tables (one run, or several
//! runs side by side with ratios).
//!
//! Histograms travel as HdrHistogram V2 + DEFLATE, base64: merging adds the histograms
//! themselves, so a merged p99 is the p99 of all samples, never an average of percentiles.
//! Rates are derived when rendering (counts over duration), so a merge only adds counts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::metrics::{Counters, new_histogram};
use crate::procstat::ServerUsage;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub target: String,
    pub domain: String,
    /// The scenario's parameters, as given (for the record, not interpreted).
    pub params: serde_json::Value,
    /// Population size and split.
    pub workers: u32,
    /// The worker indexes merged into this report.
    pub worker_indexes: Vec<u32>,
    /// Server memory (PSS) before the first phase (per-session memory is measured from it).
    pub server_memory_baseline_bytes: Option<u64>,
    pub phases: Vec<PhaseReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseReport {
    pub name: String,
    /// When the phase began, in milliseconds since the Unix epoch: a merge lines up the
    /// timelines of workers that did not start together (pods of a Job start seconds apart).
    /// `None` in reports of versions before it, which are lined up by slice.
    #[serde(default)]
    pub started_unix_ms: Option<u64>,
    pub duration_s: f64,
    pub counters: Counters,
    pub errors: BTreeMap<String, u64>,
    /// Sessions online when the phase ended, and the most seen during it.
    pub sessions_end: u64,
    pub sessions_peak: u64,
    pub login_latency: Hist,
    pub delivery_latency: Hist,
    pub server: Option<ServerUsage>,
    /// The phase second by second; its slices add up to the phase. Empty in reports of
    /// versions before it.
    #[serde(default)]
    pub timeline: Vec<Slice>,
}

/// What happened in one slice of a phase: a second, but for the phase's last, which ends with
/// it. The plots draw rates and latencies over time from these.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Slice {
    /// Seconds from the phase's start to the end of this slice.
    pub end_s: f64,
    pub counters: Counters,
    pub errors: u64,
    /// Sessions online when the slice ended.
    pub sessions: u64,
    pub delivery_latency: PackedHist,
}

/// The length of a timeline's slices.
pub const SLICE: Duration = Duration::from_secs(1);

impl Slice {
    /// The `index`th second of a timeline in which nothing happened.
    fn empty(index: usize) -> Self {
        Self {
            end_s: (index + 1) as f64 * SLICE.as_secs_f64(),
            counters: Counters::default(),
            errors: 0,
            sessions: 0,
            delivery_latency: PackedHist::pack(&new_histogram()),
        }
    }
}

/// A histogram of microseconds that serialises as its exact encoding plus a readable summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self(new_histogram())
    }
}

#[derive(Serialize, Deserialize)]
struct HistJson {
    count: u64,
    #[serde(default)]
    p50_us: u64,
    #[serde(default)]
    p90_us: u64,
    #[serde(default)]
    p99_us: u64,
    #[serde(default)]
    p999_us: u64,
    #[serde(default)]
    max_us: u64,
    /// HdrHistogram V2 + DEFLATE, base64: the only field read back.
    hdr_v2_deflate_base64: String,
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let h = &self.0;
        HistJson {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            hdr_v2_deflate_base64: B64.encode(PackedHist::pack(h).0),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = HistJson::deserialize(d)?;
        let bytes = B64
            .decode(&json.hdr_v2_deflate_base64)
            .map_err(serde::de::Error::custom)?;
        unpack(&bytes).map(Self).map_err(serde::de::Error::custom)
    }
}

/// A histogram kept encoded (HdrHistogram V2 + DEFLATE): a few hundred bytes, where a decoded
/// one holds its whole counts array (about 180 KiB at [`new_histogram`]'s bounds). A long
/// run's timeline holds one a second. In JSON it is a [`Hist`].
#[derive(Clone, Debug, PartialEq)]
pub struct PackedHist(Vec<u8>);

impl PackedHist {
    pub fn pack(histogram: &Histogram<u64>) -> Self {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(histogram, &mut bytes)
            .expect("a histogram encodes into memory");
        Self(bytes)
    }

    pub fn unpack(&self) -> Histogram<u64> {
        unpack(&self.0).expect("packed histograms were encoded here or checked when read")
    }
}

fn unpack(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e:?}"))
}

impl Serialize for PackedHist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hist(self.unpack()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PackedHist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hist::deserialize(d).map(|hist| Self::pack(&hist.0))
    }
}

/// Adds `from` to `into`, as merging reports does.
fn add_histogram(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), MergeError> {
    into.add(from)
        .map_err(|e| MergeError::Histogram(format!("{e:?}")))
}

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MergeError {
    #[error("nothing to merge")]
    Empty,
    #[error("reports are of different scenarios ({0} and {1})")]
    Scenario(String, String),
    #[error("reports have different phases ({0:?} and {1:?})")]
    Phases(Vec<String>, Vec<String>),
    #[error("worker {0} appears twice")]
    DuplicateWorker(u32),
    #[error("histogram: {0}")]
    Histogram(String),
}

/// What a timeline chart reads from a slice, given the slice's length in seconds; `None`
/// leaves the slice out (a latency of a slice without samples).
pub type SliceValue = fn(&Slice, f64) -> Option<f64>;

/// Slices shorter than this (a phase's last one may be a moment long) are left out of the
/// timelines: a rate over a few milliseconds says nothing.
const SHORTEST_SLICE_S: f64 = 0.5;

impl Report {
    /// `value` at the end of each slice of the run, its phases one after another: (seconds
    /// from the first phase's start, value).
    pub fn over_time(&self, value: SliceValue) -> Vec<(f64, f64)> {
        let mut points = Vec::new();
        let mut offset = 0.0;
        for phase in &self.phases {
            let mut start = 0.0;
            for slice in &phase.timeline {
                let length = slice.end_s - start;
                start = slice.end_s;
                if length < SHORTEST_SLICE_S {
                    continue;
                }
                if let Some(y) = value(slice, length) {
                    points.push((offset + slice.end_s, y));
                }
            }
            offset += phase.duration_s;
        }
        points
    }

    pub fn phase_names(&self) -> Vec<String> {
        self.phases.iter().map(|p| p.name.clone()).collect()
    }

    /// Combines the reports of the workers of one run. Counts, sessions and histograms add
    /// up; each phase lasts from its first worker's start to its last worker's end; server
    /// usage is the largest seen, because every worker on the machine samples the same server.
    pub fn merge(reports: &[Report]) -> Result<Report, MergeError> {
        let (first, rest) = reports.split_first().ok_or(MergeError::Empty)?;
        let mut merged = first.clone();
        for report in rest {
            if report.scenario != merged.scenario {
                return Err(MergeError::Scenario(
                    merged.scenario.clone(),
                    report.scenario.clone(),
                ));
            }
            if report.phase_names() != merged.phase_names() {
                return Err(MergeError::Phases(
                    merged.phase_names(),
                    report.phase_names(),
                ));
            }
            for &index in &report.worker_indexes {
                if merged.worker_indexes.contains(&index) {
                    return Err(MergeError::DuplicateWorker(index));
                }
                merged.worker_indexes.push(index);
            }
            merged.server_memory_baseline_bytes = either(
                merged.server_memory_baseline_bytes,
                report.server_memory_baseline_bytes,
                u64::max,
            );
            for (into, from) in merged.phases.iter_mut().zip(&report.phases) {
                into.merge(from)?;
            }
        }
        merged.worker_indexes.sort_unstable();
        Ok(merged)
    }
}

/// `both` of the two when each report has the figure, else the one that has it.
fn either<T>(a: Option<T>, b: Option<T>, both: impl FnOnce(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(both(a, b)),
        (a, b) => a.or(b),
    }
}

impl PhaseReport {
    fn merge(&mut self, other: &PhaseReport) -> Result<(), MergeError> {
        let (mine, theirs) = slice_offsets(self.started_unix_ms, other.started_unix_ms);
        self.started_unix_ms = either(self.started_unix_ms, other.started_unix_ms, u64::min);
        self.duration_s = (mine as f64 + self.duration_s).max(theirs as f64 + other.duration_s);
        self.counters.add(&other.counters);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.sessions_end += other.sessions_end;
        self.sessions_peak += other.sessions_peak;
        for (into, from) in [
            (&mut self.login_latency, &other.login_latency),
            (&mut self.delivery_latency, &other.delivery_latency),
        ] {
            add_histogram(&mut into.0, &from.0)?;
        }
        delay_timeline(&mut self.timeline, mine);
        merge_timelines(&mut self.timeline, &other.timeline, theirs)?;
        self.server = either(self.server, other.server, |a, b| ServerUsage {
            cpu_s: a.cpu_s.max(b.cpu_s),
            memory_end_bytes: a.memory_end_bytes.max(b.memory_end_bytes),
            memory_max_bytes: a.memory_max_bytes.max(b.memory_max_bytes),
            processes: a.processes.max(b.processes),
        });
        Ok(())
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How many whole slices (seconds) each of two phases started after the earlier of them, so
/// that a slice covers the same second of the clock in both. Without both starts the phases
/// are taken to have started together.
fn slice_offsets(mine: Option<u64>, theirs: Option<u64>) -> (usize, usize) {
    let (Some(mine), Some(theirs)) = (mine, theirs) else {
        return (0, 0);
    };
    let slices_after = |later: u64, earlier: u64| {
        (later.saturating_sub(earlier) as f64 / SLICE.as_millis() as f64).round() as usize
    };
    (slices_after(mine, theirs), slices_after(theirs, mine))
}

/// Moves a timeline `slices` later, behind empty slices: the seconds before its worker began.
fn delay_timeline(timeline: &mut Vec<Slice>, slices: usize) {
    if slices == 0 {
        return;
    }
    let delay = slices as f64 * SLICE.as_secs_f64();
    for slice in timeline.iter_mut() {
        slice.end_s += delay;
    }
    timeline.splice(0..0, (0..slices).map(Slice::empty));
}

/// Adds the slices of another worker's phase, `offset` slices later, to the slices of this one
/// that cover the same seconds.
fn merge_timelines(into: &mut Vec<Slice>, from: &[Slice], offset: usize) -> Result<(), MergeError> {
    let delay = offset as f64 * SLICE.as_secs_f64();
    for (i, slice) in from.iter().enumerate() {
        let at = i + offset;
        while into.len() <= at {
            into.push(Slice::empty(into.len()));
        }
        let mine = &mut into[at];
        mine.end_s = mine.end_s.max(slice.end_s + delay);
        mine.counters.add(&slice.counters);
        mine.errors += slice.errors;
        mine.sessions += slice.sessions;
        let mut latency = mine.delivery_latency.unpack();
        add_histogram(&mut latency, &slice.delivery_latency.unpack())?;
        mine.delivery_latency = PackedHist::pack(&latency);
    }
    Ok(())
}

/// One row of a table: a label and how to read it from a phase (None: not applicable).
struct Row {
    label: &'static str,
    value: fn(&Report, &PhaseReport) -> Option<f64>,
    /// Decimal places.
    precision: usize,
}

fn rate(count: u64, p: &PhaseReport) -> Option<f64> {
    (count > 0 && p.duration_s > 0.0).then(|| count as f64 / p.duration_s)
}

fn quantile_ms(h: &Hist, q: f64) -> Option<f64> {
    (!h.0.is_empty()).then(|| h.0.value_at_quantile(q) as f64 / 1000.0)
}

fn per(numerator: Option<f64>, count: u64) -> Option<f64> {
    numerator.filter(|_| count > 0).map(|n| n / count as f64)
}

const ROWS: &[Row] = &[
    Row {
        label: "duration (s)",
        value: |_, p| Some(p.duration_s),
        precision: 1,
    },
    Row {
        label: "sessions at end",
        value: |_, p| Some(p.sessions_end as f64),
        precision: 0,
    },
    Row {
        label: "accounts created",
        value: |_, p| nonzero(p.counters.accounts_created),
        precision: 0,
    },
    Row {
        label: "accounts existing",
        value: |_, p| nonzero(p.counters.accounts_existed),
        precision: 0,
    },
    Row {
        label: "logins",
        value: |_, p| nonzero(p.counters.logins),
        precision: 0,
    },
    Row {
        label: "logins/s",
        value: |_, p| rate(p.counters.logins, p),
        precision: 1,
    },
    Row {
        label: "login p50 (ms)",
        value: |_, p| quantile_ms(&p.login_latency, 0.5),
        precision: 2,
    },
    Row {
        label: "login p99 (ms)",
        value: |_, p| quantile_ms(&p.login_latency, 0.99),
        precision: 2,
    },
    Row {
        label: "login failures",
        value: |_, p| nonzero(p.counters.login_failures),
        precision: 0,
    },
    Row {
        label: "messages sent",
        value: |_, p| nonzero(p.counters.messages_sent),
        precision: 0,
    },
    Row {
        label: "messages delivered",
        value: |_, p| nonzero(p.counters.messages_delivered),
        precision: 0,
    },
    Row {
        label: "delivered msgs/s",
        value: |_, p| rate(p.counters.messages_delivered, p),
        precision: 1,
    },
    Row {
        label: "delivery p50 (ms)",
        value: |_, p| quantile_ms(&p.delivery_latency, 0.5),
        precision: 3,
    },
    Row {
        label: "delivery p90 (ms)",
        value: |_, p| quantile_ms(&p.delivery_latency, 0.9),
        precision: 3,
    },
    Row {
        label: "delivery p99 (ms)",
        value: |_, p| quantile_ms(&p.delivery_latency, 0.99),
        precision: 3,
    },
    Row {
        label: "delivery p99.9 (ms)",
        value: |_, p| quantile_ms(&p.delivery_latency, 0.999),
        precision: 3,
    },
    Row {
        label: "delivery max (ms)",
        value: |_, p| quantile_ms(&p.delivery_latency, 1.0),
        precision: 3,
    },
    Row {
        label: "reordered",
        value: |_, p| nonzero(p.counters.messages_reordered),
        precision: 0,
    },
    Row {
        label: "seq gaps",
        value: |_, p| nonzero(p.counters.messages_skipped),
        precision: 0,
    },
    Row {
        label: "presences delivered",
        value: |_, p| nonzero(p.counters.presences_delivered),
        precision: 0,
    },
    Row {
        label: "presences/s",
        value: |_, p| rate(p.counters.presences_delivered, p),
        precision: 1,
    },
    Row {
        label: "errors",
        value: |_, p| nonzero(p.errors_total()),
        precision: 0,
    },
    Row {
        label: "server CPU (s)",
        value: |_, p| p.server.map(|s| s.cpu_s),
        precision: 2,
    },
    Row {
        label: "server CPU cores",
        value: |_, p| p.server.map(|s| s.cpu_s / p.duration_s.max(1e-9)),
        precision: 2,
    },
    Row {
        label: "server CPU µs/delivered",
        value: |_, p| {
            per(
                p.server.map(|s| s.cpu_s * 1e6),
                p.counters.messages_delivered + p.counters.presences_delivered,
            )
        },
        precision: 1,
    },
    Row {
        label: "server CPU ms/login",
        value: |_, p| per(p.server.map(|s| s.cpu_s * 1e3), p.counters.logins),
        precision: 3,
    },
    Row {
        label: "server memory end (MiB)",
        value: |_, p| p.server.map(|s| s.memory_end_bytes as f64 / 1048576.0),
        precision: 1,
    },
    Row {
        label: "server memory max (MiB)",
        value: |_, p| p.server.map(|s| s.memory_max_bytes as f64 / 1048576.0),
        precision: 1,
    },
    Row {
        label: "server KiB/session",
        value: |r, p| {
            let base = r.server_memory_baseline_bytes?;
            let end = p.server?.memory_end_bytes;
            per(
                Some(end.saturating_sub(base) as f64 / 1024.0),
                p.sessions_end,
            )
        },
        precision: 1,
    },
];

fn nonzero(n: u64) -> Option<f64> {
    (n > 0).then_some(n as f64)
}

fn fmt_cell(value: Option<f64>, precision: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.precision$}"))
}

/// Renders rows × columns, skipping rows that are empty in every column.
fn render(title: &str, headers: &[String], cells: Vec<(&'static str, Vec<String>)>) -> String {
    let cells: Vec<_> = cells
        .into_iter()
        .filter(|(_, values)| values.iter().any(|v| v != "-"))
        .collect();
    let label_width = cells
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|(_, v)| v[i].len())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("{title}\n");
    let _ = write!(out, "{:label_width$}", "");
    for (h, w) in headers.iter().zip(&widths) {
        let _ = write!(out, "  {h:>w$}");
    }
    out.push('\n');
    for (label, values) in cells {
        let pad = label_width - label.chars().count();
        let _ = write!(out, "{label}{:pad$}", "");
        for (v, w) in values.iter().zip(&widths) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    out
}

/// The final table of one report: one column per phase.
pub fn table(report: &Report) -> String {
    let headers = report
        .phases
        .iter()
        .map(|p| p.name.clone())
        .collect::<Vec<_>>();
    let cells = ROWS
        .iter()
        .map(|row| {
            let values = report
                .phases
                .iter()
                .map(|p| fmt_cell((row.value)(report, p), row.precision))
                .collect();
            (row.label, values)
        })
        .collect();
    let title = format!(
        "{} against {} ({}), workers {:?}/{}",
        report.scenario, report.target, report.domain, report.worker_indexes, report.workers
    );
    let mut out = render(&title, &headers, cells);
    let errors = report.phases.iter().flat_map(|p| &p.errors).fold(
        BTreeMap::<&str, u64>::new(),
        |mut acc, (k, v)| {
            *acc.entry(k).or_default() += v;
            acc
        },
    );
    for (kind, n) in errors {
        let _ = writeln!(out, "  error {kind}: {n}");
    }
    out
}

/// Side-by-side tables of several runs (labelled), one per phase name of the first run, with
/// each later run's ratio to the first. A run may have several rounds (the same scenario run
/// again, the servers taking turns): each figure is then its median over the rounds, and each
/// ratio the median of the rounds' own ratios, so that a machine that drifts between rounds
/// moves both sides of a ratio together.
pub fn compare(runs: &[(String, Vec<Report>)]) -> String {
    let Some(base) = runs.first().and_then(|(_, rounds)| rounds.first()) else {
        return String::new();
    };
    let rounds = runs
        .iter()
        .map(|(_, rounds)| rounds.len())
        .max()
        .unwrap_or(1);
    let mut out = String::new();
    for phase in &base.phases {
        let mut headers: Vec<String> = runs.iter().map(|(label, _)| label.clone()).collect();
        headers.extend(
            runs.iter()
                .skip(1)
                .map(|(label, _)| format!("{label}/{}", runs[0].0)),
        );
        let cells = ROWS
            .iter()
            .map(|row| {
                // Each run's value in each of its rounds.
                let values: Vec<Vec<Option<f64>>> = runs
                    .iter()
                    .map(|(_, reports)| {
                        reports
                            .iter()
                            .map(|r| {
                                r.phases
                                    .iter()
                                    .find(|p| p.name == phase.name)
                                    .and_then(|p| (row.value)(r, p))
                            })
                            .collect()
                    })
                    .collect();
                let mut cells: Vec<String> = values
                    .iter()
                    .map(|run| fmt_cell(median(run.iter().flatten().copied()), row.precision))
                    .collect();
                cells.extend(values.iter().skip(1).map(|run| {
                    let ratios = values[0].iter().zip(run).filter_map(|pair| match pair {
                        (Some(a), Some(b)) if *a != 0.0 => Some(b / a),
                        _ => None,
                    });
                    fmt_cell(median(ratios), 2)
                }));
                (row.label, cells)
            })
            .collect();
        let title = match rounds {
            1 => format!("phase {} ({})", phase.name, base.scenario),
            n => format!(
                "phase {} ({}), medians of {n} rounds",
                phase.name, base.scenario
            ),
        };
        out.push_str(&render(&title, &headers, cells));
        out.push('\n');
    }
    out
}

/// The middle value (the mean of the middle two of an even count); `None` for none.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn hist(samples: &[u64]) -> Hist {
        let mut h = new_histogram();
        for &s in samples {
            h.record(s).unwrap();
        }
        Hist(h)
    }

    fn report(worker: u32, logins: &[u64], deliveries: &[u64], cpu: f64) -> Report {
        Report {
            tool: "xmppd-loadtest".into(),
            scenario: "chat".into(),
            target: "127.0.0.1:5222".into(),
            domain: "localhost".into(),
            params: serde_json::Value::Null,
            workers: 2,
            worker_indexes: vec![worker],
            server_memory_baseline_bytes: Some(1000),
            phases: vec![PhaseReport {
                name: "steady".into(),
                started_unix_ms: Some(1_800_000_000_000),
                duration_s: 10.0 + worker as f64,
                counters: Counters {
                    logins: logins.len() as u64,
                    messages_delivered: deliveries.len() as u64,
                    ..Counters::default()
                },
                errors: BTreeMap::from([("timeout:bind".to_string(), 1 + worker as u64)]),
                sessions_end: 5,
                sessions_peak: 6,
                login_latency: hist(logins),
                delivery_latency: hist(deliveries),
                server: Some(ServerUsage {
                    cpu_s: cpu,
                    memory_end_bytes: 4096,
                    memory_max_bytes: 8192,
                    processes: 1,
                }),
                timeline: timeline(2 + worker as usize, deliveries),
            }],
        }
    }

    /// `deliveries` over `seconds` slices, one session more online at the end of each.
    fn timeline(seconds: usize, deliveries: &[u64]) -> Vec<Slice> {
        deliveries
            .chunks(deliveries.len().div_ceil(seconds))
            .enumerate()
            .map(|(i, chunk)| Slice {
                end_s: (i + 1) as f64,
                counters: Counters {
                    messages_delivered: chunk.len() as u64,
                    ..Counters::default()
                },
                errors: 0,
                sessions: i as u64 + 1,
                delivery_latency: PackedHist::pack(&hist(chunk).0),
            })
            .collect()
    }

    fn json_roundtrip(r: &Report) -> Report {
        serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap()
    }

    #[test]
    fn merge_equals_a_report_of_all_samples() {
        let mut rng = rand::rng();
        let a: Vec<u64> = (0..5000).map(|_| rng.random_range(50..200_000)).collect();
        let b: Vec<u64> = (0..3000).map(|_| rng.random_range(1..5_000_000)).collect();
        let (la, lb) = (vec![1200, 1500, 90_000], vec![800, 2_000_000]);
        let merged = Report::merge(&[
            json_roundtrip(&report(0, &la, &a, 2.0)),
            json_roundtrip(&report(1, &lb, &b, 3.0)),
        ])
        .unwrap();
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let all_logins: Vec<u64> = la.iter().chain(&lb).copied().collect();
        let phase = &json_roundtrip(&merged).phases[0];
        assert_eq!(phase.delivery_latency, hist(&all));
        assert_eq!(phase.login_latency, hist(&all_logins));
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                phase.delivery_latency.0.value_at_quantile(q),
                hist(&all).0.value_at_quantile(q)
            );
        }
        assert_eq!(phase.counters.messages_delivered, 8000);
        assert_eq!(phase.counters.logins, 5);
        assert_eq!(phase.errors["timeout:bind"], 3);
        assert_eq!(phase.duration_s, 11.0);
        assert_eq!(phase.sessions_end, 10);
        assert_eq!(phase.server.unwrap().cpu_s, 3.0);
        assert_eq!(merged.worker_indexes, vec![0, 1]);

        // Second by second, the workers' slices add up, and still make up the phase.
        let seconds = &phase.timeline;
        assert_eq!(seconds.len(), 3);
        assert_eq!(
            seconds.iter().map(|s| s.sessions).collect::<Vec<_>>(),
            [2, 4, 3]
        );
        let delivered: u64 = seconds.iter().map(|s| s.counters.messages_delivered).sum();
        assert_eq!(delivered, 8000);
        let mut together = hist(&[]);
        for slice in seconds {
            together.0.add(slice.delivery_latency.unpack()).unwrap();
        }
        assert_eq!(together, hist(&all));
    }

    /// Pods of a Job start seconds apart: their slices are added where they cover the same
    /// second of the clock, whichever report comes first.
    #[test]
    fn timelines_of_workers_started_apart_line_up_by_the_clock() {
        let mut early = report(0, &[], &[10, 20, 30], 1.0);
        early.phases[0].timeline = timeline(3, &[10, 20, 30]);
        early.phases[0].duration_s = 3.0;
        let mut late = report(1, &[], &[40, 50, 60], 1.0);
        late.phases[0].timeline = timeline(3, &[40, 50, 60]);
        late.phases[0].duration_s = 3.0;
        // Two seconds later, give or take the clocks' milliseconds.
        late.phases[0].started_unix_ms = early.phases[0].started_unix_ms.map(|ms| ms + 2_040);
        for order in [[&early, &late], [&late, &early]] {
            let merged = Report::merge(&order.map(Report::clone)).unwrap();
            let phase = &merged.phases[0];
            assert_eq!(phase.started_unix_ms, early.phases[0].started_unix_ms);
            assert_eq!(phase.duration_s, 5.0);
            let seconds = &phase.timeline;
            let delivered: Vec<u64> = seconds
                .iter()
                .map(|s| s.counters.messages_delivered)
                .collect();
            assert_eq!(delivered, [1, 1, 2, 1, 1]);
            let ends: Vec<f64> = seconds.iter().map(|s| s.end_s).collect();
            assert_eq!(ends, [1.0, 2.0, 3.0, 4.0, 5.0]);
            // One session more online at the end of each of a worker's seconds.
            let sessions: Vec<u64> = seconds.iter().map(|s| s.sessions).collect();
            assert_eq!(sessions, [1, 2, 4, 2, 3]);
            assert_eq!(seconds[2].delivery_latency.unpack(), hist(&[30, 40]).0);
        }
    }

    #[test]
    fn a_slice_keeps_its_latencies_packed_and_exact() {
        let samples: Vec<u64> = (1..=5000).map(|i| i * 37 % 90_000 + 50).collect();
        let packed = PackedHist::pack(&hist(&samples).0);
        assert!(packed.0.len() < 16 * 1024, "{} bytes", packed.0.len());
        assert!(PackedHist::pack(&new_histogram()).0.len() < 1024);
        assert_eq!(packed.unpack(), hist(&samples).0);
        let json = serde_json::to_string(&packed).unwrap();
        assert!(json.contains("\"p99_us\""), "{json}");
        assert_eq!(serde_json::from_str::<PackedHist>(&json).unwrap(), packed);
    }

    #[test]
    fn timelines_run_on_across_phases() {
        let mut run = report(0, &[], &[10, 20, 30, 40], 1.0);
        let mut second = run.phases[0].clone();
        second.timeline = timeline(2, &[50, 60]);
        second.timeline[1].end_s = 1.2;
        run.phases.push(second);
        let delivered =
            run.over_time(|s, length| Some(s.counters.messages_delivered as f64 / length));
        // The first phase lasts 10 s; the second's last slice (0.2 s) is too short to show.
        assert_eq!(delivered, [(1.0, 2.0), (2.0, 2.0), (11.0, 1.0)]);
        let p99 = run.over_time(|s, _| {
            let micros = s.delivery_latency.unpack();
            (!micros.is_empty()).then(|| micros.value_at_quantile(0.99) as f64)
        });
        assert_eq!(p99.len(), 3);
    }

    /// Three rounds of two servers: the figures are medians, the ratio the median of the
    /// rounds' ratios (0.2), not the ratio of the medians (2 / 12).
    #[test]
    fn rounds_are_compared_by_their_medians() {
        let deliveries: Vec<u64> = (1..=1000).collect();
        let rounds = |cpu: [f64; 3]| -> Vec<Report> {
            cpu.iter()
                .map(|&s| report(0, &[], &deliveries, s))
                .collect()
        };
        let table = compare(&[
            ("peer".into(), rounds([0.010, 0.100, 0.012])),
            ("ours".into(), rounds([0.002, 0.002, 0.003])),
        ]);
        assert!(table.contains("medians of 3 rounds"), "{table}");
        let cpu = table
            .lines()
            .find(|line| line.starts_with("server CPU µs/delivered"))
            .unwrap();
        let cells: Vec<&str> = cpu.split_whitespace().skip(3).collect();
        assert_eq!(cells, ["12.0", "2.0", "0.20"], "{table}");
        assert_eq!(median([3.0, 1.0, 2.0, 10.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn merge_refuses_mismatched_reports() {
        let a = report(0, &[1], &[1], 1.0);
        assert_eq!(
            Report::merge(&[a.clone(), a.clone()]).unwrap_err(),
            MergeError::DuplicateWorker(0)
        );
        let mut other = report(1, &[1], &[1], 1.0);
        other.scenario = "idle".into();
        assert!(matches!(
            Report::merge(&[a.clone(), other]),
            Err(MergeError::Scenario(..))
        ));
        let mut other = report(1, &[1], &[1], 1.0);
        other.phases[0].name = "ramp-up".into();
        assert!(matches!(
            Report::merge(&[a, other]),
            Err(MergeError::Phases(..))
        ));
        assert_eq!(Report::merge(&[]).unwrap_err(), MergeError::Empty);
    }

    #[test]
    fn tables_show_rates_and_ratios() {
        let a = report(0, &[1000], &[500, 700], 2.0);
        let b = report(0, &[1000], &[500, 700], 4.0);
        let text = table(&a);
        assert!(text.contains("delivered msgs/s"), "{text}");
        assert!(text.contains("error timeout:bind: 1"), "{text}");
        let text = compare(&[("ejabberd".into(), vec![a]), ("prosody".into(), vec![b])]);
        let cpu = text
            .lines()
            .find(|l| l.starts_with("server CPU (s)"))
            .unwrap();
        assert!(cpu.trim_end().ends_with("2.00"), "{cpu}");
    }
}
