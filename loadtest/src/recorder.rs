//! Phase bookkeeping: snapshots at each phase boundary become a [`PhaseReport`], while a
//! ticker cuts the phase into one-second slices (its timeline), samples the server's
//! processes, tracks the peak session count and drives the live progress bar.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::metrics::{Counters, Metrics, new_histogram};
use crate::procstat::{ProcSampler, ServerSelector};
use crate::report::{Hist, PackedHist, PhaseReport, Report, SLICE, Slice};

const TICK: Duration = Duration::from_millis(500);

/// What the progress bar of a phase counts.
#[derive(Clone, Copy)]
pub enum Goal {
    /// Seconds of a fixed-length phase.
    Time(Duration),
    /// Items done out of `total`, read from the counters of the phase.
    Count {
        total: u64,
        done: fn(&Counters) -> u64,
    },
    /// A ramp of unknown length: a spinner.
    Open,
}

struct Current {
    name: String,
    /// When the phase began by the wall clock, for lining up workers' timelines; its
    /// timeline's `start` is the same moment on the monotonic clock.
    started_at: SystemTime,
    counters: Counters,
    errors: BTreeMap<String, u64>,
    bar: ProgressBar,
    /// Highest `Metrics::online` seen in the phase, kept by the ticker.
    peak: Arc<AtomicU64>,
    /// Cut by the ticker every second, and once more when the phase ends.
    timeline: Arc<Mutex<Timeline>>,
    ticker: JoinHandle<()>,
}

/// A phase's slices so far, and where the last one ended.
struct Timeline {
    start: Instant,
    slices: Vec<Slice>,
    counters: Counters,
    errors: u64,
    /// The phase's latencies so far; a slice keeps its deliveries' packed.
    login_latency: Histogram<u64>,
    delivery_latency: Histogram<u64>,
}

impl Timeline {
    /// Starts at the phase's own snapshot, so that the slices add up to the phase exactly.
    fn new(counters: Counters, errors: &BTreeMap<String, u64>) -> Self {
        Self {
            start: Instant::now(),
            slices: Vec::new(),
            counters,
            errors: errors.values().sum(),
            login_latency: new_histogram(),
            delivery_latency: new_histogram(),
        }
    }

    /// Whether the current slice has lasted its second, to within half a tick.
    fn due(&self) -> bool {
        let next = SLICE * (self.slices.len() as u32 + 1);
        self.start.elapsed() + TICK / 2 >= next
    }

    /// Ends the current slice here: what happened since the last cut.
    fn cut(&mut self, metrics: &Metrics) {
        let counters = metrics.counters();
        let errors = metrics.error_total();
        let (login, delivery) = metrics.take_histograms();
        for (phase, slice) in [
            (&mut self.login_latency, &login),
            (&mut self.delivery_latency, &delivery),
        ] {
            phase
                .add(slice)
                .expect("latency histograms share their bounds");
        }
        self.slices.push(Slice {
            end_s: self.start.elapsed().as_secs_f64(),
            counters: counters.since(&self.counters),
            errors: errors.saturating_sub(self.errors),
            sessions: metrics.online(),
            delivery_latency: PackedHist::pack(&delivery),
        });
        self.counters = counters;
        self.errors = errors;
    }
}

pub struct Recorder {
    metrics: Arc<Metrics>,
    sampler: Option<Arc<Mutex<ProcSampler>>>,
    baseline_memory: Option<u64>,
    quiet: bool,
    phases: Vec<PhaseReport>,
    current: Option<Current>,
}

impl Recorder {
    pub fn new(metrics: Arc<Metrics>, server: Option<ServerSelector>, quiet: bool) -> Self {
        let sampler = server.map(|s| Arc::new(Mutex::new(ProcSampler::new(s))));
        let baseline_memory = sampler
            .as_ref()
            .map(|s| s.lock().expect("sampler").memory_now());
        Self {
            metrics,
            sampler,
            baseline_memory,
            quiet,
            phases: Vec::new(),
            current: None,
        }
    }

    /// Ends the running phase, if any, and starts `name`.
    pub fn begin(&mut self, name: &str, goal: Goal) {
        self.end();
        // Samples gathered between phases belong to none.
        drop(self.metrics.take_histograms());
        if let Some(sampler) = &self.sampler {
            sampler.lock().expect("sampler").begin_phase();
        }
        let bar = self.bar(name, goal);
        let peak = Arc::new(AtomicU64::new(self.metrics.online()));
        let counters = self.metrics.counters();
        let errors = self.metrics.errors();
        let timeline = Arc::new(Mutex::new(Timeline::new(counters, &errors)));
        let ticker = tokio::spawn(tick(
            self.metrics.clone(),
            self.sampler.clone(),
            bar.clone(),
            goal,
            counters,
            peak.clone(),
            timeline.clone(),
        ));
        self.current = Some(Current {
            name: name.to_owned(),
            started_at: SystemTime::now(),
            counters,
            errors,
            bar,
            peak,
            timeline,
            ticker,
        });
    }

    fn bar(&self, name: &str, goal: Goal) -> ProgressBar {
        let target = if self.quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let (len, template) = match goal {
            Goal::Time(d) => (
                Some(d.as_secs().max(1)),
                "{prefix:>12} [{bar:30}] {elapsed}/{duration} {msg}",
            ),
            Goal::Count { total, .. } => (
                Some(total),
                "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            ),
            Goal::Open => (None, "{prefix:>12} {spinner} {elapsed} {msg}"),
        };
        let style = ProgressStyle::with_template(template)
            .expect("valid progress template")
            .progress_chars("=> ");
        ProgressBar::with_draw_target(len, target)
            .with_style(style)
            .with_prefix(name.to_owned())
    }

    /// Closes the running phase into a report entry.
    pub fn end(&mut self) {
        let Some(current) = self.current.take() else {
            return;
        };
        current.ticker.abort();
        let mut timeline = current.timeline.lock().expect("timeline");
        timeline.cut(&self.metrics);
        // The phase ends where its last slice, just cut, does.
        let duration_s = timeline.slices.last().map_or(0.0, |slice| slice.end_s);
        let login = std::mem::replace(&mut timeline.login_latency, new_histogram());
        let delivery = std::mem::replace(&mut timeline.delivery_latency, new_histogram());
        let slices = std::mem::take(&mut timeline.slices);
        let counters = timeline.counters.since(&current.counters);
        drop(timeline);
        let errors = self
            .metrics
            .errors()
            .into_iter()
            .filter_map(|(kind, n)| {
                let before = current.errors.get(&kind).copied().unwrap_or(0);
                (n > before).then(|| (kind, n - before))
            })
            .collect();
        let phase = PhaseReport {
            name: current.name,
            started_unix_ms: current
                .started_at
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|since| since.as_millis() as u64),
            duration_s,
            counters,
            errors,
            sessions_end: self.metrics.online(),
            sessions_peak: current
                .peak
                .load(Ordering::Relaxed)
                .max(self.metrics.online()),
            login_latency: Hist(login),
            delivery_latency: Hist(delivery),
            server: self
                .sampler
                .as_ref()
                .map(|s| s.lock().expect("sampler").end_phase()),
            timeline: slices,
        };
        current.bar.finish();
        if current.bar.is_hidden() && !self.quiet {
            eprintln!(
                "phase {} done in {:.1}s: {}",
                phase.name,
                phase.duration_s,
                summary(&phase.counters, phase.duration_s, phase.sessions_end)
            );
        }
        self.phases.push(phase);
    }

    pub fn finish(mut self, header: Report) -> Report {
        self.end();
        Report {
            server_memory_baseline_bytes: self.baseline_memory,
            phases: self.phases,
            ..header
        }
    }
}

fn summary(c: &Counters, seconds: f64, online: u64) -> String {
    let per_s = |n: u64| n as f64 / seconds.max(1e-9);
    format!(
        "online {online} | logins {:.0}/s | delivered {:.0}/s | presences {:.0}/s",
        per_s(c.logins),
        per_s(c.messages_delivered),
        per_s(c.presences_delivered),
    )
}

async fn tick(
    metrics: Arc<Metrics>,
    sampler: Option<Arc<Mutex<ProcSampler>>>,
    bar: ProgressBar,
    goal: Goal,
    start: Counters,
    peak: Arc<AtomicU64>,
    timeline: Arc<Mutex<Timeline>>,
) {
    let mut interval = tokio::time::interval(TICK);
    let mut last = start;
    let mut last_at = Instant::now();
    let mut ticks = 0u64;
    loop {
        interval.tick().await;
        ticks += 1;
        let now = metrics.counters();
        let online = metrics.online();
        peak.fetch_max(online, Ordering::Relaxed);
        {
            let mut timeline = timeline.lock().expect("timeline");
            if timeline.due() {
                timeline.cut(&metrics);
            }
        }
        let rates = summary(&now.since(&last), last_at.elapsed().as_secs_f64(), online);
        bar.set_message(format!("{rates} | errors {}", metrics.error_total()));
        match goal {
            Goal::Time(_) => bar.set_position(ticks * TICK.as_millis() as u64 / 1000),
            Goal::Count { done, .. } => bar.set_position(done(&now.since(&start))),
            Goal::Open => bar.tick(),
        }
        if let Some(sampler) = &sampler
            && ticks.is_multiple_of(2)
        {
            // Off the sessions' thread: a scan of /proc takes a millisecond or more, more for
            // a large server's memory map, which message latencies would show.
            let sampler = sampler.clone();
            let sampled =
                tokio::task::spawn_blocking(move || sampler.lock().expect("sampler").sample());
            let _ = sampled.await;
        }
        last = now;
        last_at = Instant::now();
    }
}
