//! CPU time and resident memory of the server under test, read from `/proc`, so results can
//! be given per core and per session. A process name selects every matching process, summed:
//! a cluster of processes is measured as one server.

use std::collections::HashMap;
use std::fs;

use serde::{Deserialize, Serialize};

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`. The kernel ABI fixes it at 100
/// on every architecture Linux userspace sees, whatever the internal tick rate.
const USER_HZ: f64 = 100.0;

/// Which processes make up the server.
#[derive(Clone, Debug)]
pub enum ServerSelector {
    Pids(Vec<u32>),
    /// Matches the short name (`comm`) or the base name of the first two command-line words,
    /// so `prosody` finds `lua5.4 /usr/bin/prosody`.
    Name(String),
}

/// The server's use of the machine over one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerUsage {
    /// User plus system CPU seconds, summed over the processes.
    pub cpu_s: f64,
    /// Resident memory at the end of the phase, summed.
    pub rss_end_bytes: u64,
    /// Highest summed resident memory seen during the phase (sampled every second).
    pub rss_max_bytes: u64,
    /// Processes seen during the phase.
    pub processes: u32,
}

#[derive(Clone, Copy, Debug)]
struct ProcTimes {
    /// CPU ticks when the phase began, or when the process was first seen.
    base: u64,
    last: u64,
}

/// Samples the selected processes; one phase at a time.
#[derive(Debug)]
pub struct ProcSampler {
    selector: ServerSelector,
    procs: HashMap<u32, ProcTimes>,
    rss_now: u64,
    rss_max: u64,
}

impl ProcSampler {
    pub fn new(selector: ServerSelector) -> Self {
        let mut sampler = Self {
            selector,
            procs: HashMap::new(),
            rss_now: 0,
            rss_max: 0,
        };
        sampler.begin_phase();
        sampler
    }

    /// Resident memory now, summed (the baseline before any session exists).
    pub fn rss_now(&mut self) -> u64 {
        self.sample();
        self.rss_now
    }

    /// Starts counting CPU and peak memory from now.
    pub fn begin_phase(&mut self) {
        self.procs.clear();
        self.rss_max = 0;
        self.sample();
        for times in self.procs.values_mut() {
            times.base = times.last;
        }
    }

    /// Reads every selected process once; called every second and at phase ends.
    pub fn sample(&mut self) {
        let mut rss = 0;
        for pid in self.pids() {
            let Some(ticks) = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat_ticks(&s))
            else {
                continue;
            };
            rss += fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| parse_status_rss(&s))
                .unwrap_or(0);
            self.procs
                .entry(pid)
                .and_modify(|t| t.last = ticks)
                .or_insert(ProcTimes {
                    base: ticks,
                    last: ticks,
                });
        }
        self.rss_now = rss;
        self.rss_max = self.rss_max.max(rss);
    }

    /// Samples once more and returns the phase's figures.
    pub fn end_phase(&mut self) -> ServerUsage {
        self.sample();
        let ticks: u64 = self.procs.values().map(|t| t.last - t.base).sum();
        ServerUsage {
            cpu_s: ticks as f64 / USER_HZ,
            rss_end_bytes: self.rss_now,
            rss_max_bytes: self.rss_max,
            processes: self.procs.len() as u32,
        }
    }

    fn pids(&self) -> Vec<u32> {
        match &self.selector {
            ServerSelector::Pids(pids) => pids.clone(),
            ServerSelector::Name(name) => pids_named(name),
        }
    }
}

fn pids_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && process_matches(pid, name))
        .collect()
}

fn process_matches(pid: u32, name: &str) -> bool {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim_end() == name {
        return true;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline_matches(&cmdline, name)
}

fn cmdline_matches(cmdline: &[u8], name: &str) -> bool {
    cmdline
        .split(|&b| b == 0)
        .take(2)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .any(|arg| arg.rsplit('/').next() == Some(name))
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`. The command name in field 2 may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes; kernel threads have none.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 4 0 100 1000000 300";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tbeam.smp\nVmPeak:\t 9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_status_rss(status), Some(2 * 1024 * 1024));
        assert_eq!(parse_status_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn matches_interpreted_servers_by_script_name() {
        assert!(cmdline_matches(
            b"lua5.4\0/usr/bin/prosody\0-F\0",
            "prosody"
        ));
        assert!(cmdline_matches(
            b"/usr/lib/erlang/bin/beam.smp\0--\0",
            "beam.smp"
        ));
        assert!(!cmdline_matches(b"bash\0-c\0prosody\0", "prosody"));
    }

    #[test]
    fn samples_this_process() {
        let mut sampler = ProcSampler::new(ServerSelector::Pids(vec![std::process::id()]));
        // Burn about 50 ms of CPU so at least a few ticks pass.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 60 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let usage = sampler.end_phase();
        assert_eq!(usage.processes, 1);
        assert!(usage.cpu_s > 0.0, "cpu {usage:?}");
        assert!(usage.rss_end_bytes > 0 && usage.rss_max_bytes >= usage.rss_end_bytes);
    }

    #[test]
    fn missing_processes_count_as_nothing() {
        let mut sampler = ProcSampler::new(ServerSelector::Pids(vec![u32::MAX]));
        assert_eq!(sampler.end_phase(), ServerUsage::default());
    }
}
