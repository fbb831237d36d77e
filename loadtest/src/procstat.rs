//! CPU time and memory of the server under test, read from `/proc`, so results can be given
//! per core and per session. A process name selects every matching process, summed:
//! a cluster of processes is measured as one server. A selected process brings every process
//! it started with it, including those started during the run: Postgres serves each client
//! connection from a backend process of its own, which it forks when a pool connects.
//!
//! Memory is the proportional set size (PSS, `/proc/<pid>/smaps_rollup`): pages shared by
//! several processes are split between them, so a sum over processes counts each page once.
//! Resident sizes would count Postgres' shared buffers once per backend (about 20 MiB of
//! RSS, of which 3 MiB PSS, per backend here). Where `smaps_rollup` cannot be read (another
//! user's process, without the right to trace it), the process's RSS stands in.

use std::collections::{HashMap, HashSet};
use std::fs;

use serde::{Deserialize, Serialize};

/// `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`. The kernel ABI fixes it at 100
/// on every architecture Linux userspace sees, whatever the internal tick rate.
const USER_HZ: f64 = 100.0;

/// Which processes make up the server, with their descendants.
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
    /// Memory (PSS) at the end of the phase, summed.
    pub memory_end_bytes: u64,
    /// Highest summed memory seen during the phase (sampled every second).
    pub memory_max_bytes: u64,
    /// Processes seen during the phase.
    pub processes: u32,
}

#[derive(Clone, Copy, Debug)]
struct ProcTimes {
    /// CPU ticks when the phase began, or when the process was first seen; 0 for a process
    /// started during the phase, all of whose CPU time belongs to it.
    base: u64,
    last: u64,
}

/// What the sampler reads of `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    pub ppid: u32,
    /// User plus system CPU ticks.
    pub cpu_ticks: u64,
    /// When the process started, in ticks since boot.
    pub start_ticks: u64,
}

/// Samples the selected processes; one phase at a time.
#[derive(Debug)]
pub struct ProcSampler {
    selector: ServerSelector,
    procs: HashMap<u32, ProcTimes>,
    /// When the phase began, in ticks since boot.
    phase_start_ticks: u64,
    memory_now: u64,
    memory_max: u64,
}

impl ProcSampler {
    pub fn new(selector: ServerSelector) -> Self {
        let mut sampler = Self {
            selector,
            procs: HashMap::new(),
            phase_start_ticks: 0,
            memory_now: 0,
            memory_max: 0,
        };
        sampler.begin_phase();
        sampler
    }

    /// Memory now, summed (the baseline before any session exists).
    pub fn memory_now(&mut self) -> u64 {
        self.sample();
        self.memory_now
    }

    /// Starts counting CPU and peak memory from now.
    pub fn begin_phase(&mut self) {
        self.procs.clear();
        self.phase_start_ticks = uptime_ticks().unwrap_or(u64::MAX);
        self.memory_max = 0;
        self.sample();
        for times in self.procs.values_mut() {
            times.base = times.last;
        }
    }

    /// Reads every selected process once; called every second and at phase ends.
    pub fn sample(&mut self) {
        let mut memory = 0;
        for (pid, stat) in self.selected() {
            memory += process_memory(pid);
            let base = if stat.start_ticks >= self.phase_start_ticks {
                0
            } else {
                stat.cpu_ticks
            };
            self.procs
                .entry(pid)
                .and_modify(|t| t.last = stat.cpu_ticks)
                .or_insert(ProcTimes {
                    base,
                    last: stat.cpu_ticks,
                });
        }
        self.memory_now = memory;
        self.memory_max = self.memory_max.max(memory);
    }

    /// Samples once more and returns the phase's figures.
    pub fn end_phase(&mut self) -> ServerUsage {
        self.sample();
        let ticks: u64 = self.procs.values().map(|t| t.last - t.base).sum();
        ServerUsage {
            cpu_s: ticks as f64 / USER_HZ,
            memory_end_bytes: self.memory_now,
            memory_max_bytes: self.memory_max,
            processes: self.procs.len() as u32,
        }
    }

    /// The selected processes and their descendants, as they are now.
    fn selected(&self) -> Vec<(u32, Stat)> {
        let all: Vec<(u32, Stat)> = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some((pid, parse_stat(&stat)?))
            })
            .collect();
        let roots: Vec<u32> = match &self.selector {
            ServerSelector::Pids(pids) => pids.clone(),
            // Never the load generator itself, whatever its name.
            ServerSelector::Name(name) => all
                .iter()
                .map(|&(pid, _)| pid)
                .filter(|&pid| pid != std::process::id() && process_matches(pid, name))
                .collect(),
        };
        with_descendants(&roots, &all)
    }
}

/// The processes of `all` (pid and stat) that are in `roots` or descend from one.
fn with_descendants(roots: &[u32], all: &[(u32, Stat)]) -> Vec<(u32, Stat)> {
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    for (index, (_, stat)) in all.iter().enumerate() {
        children.entry(stat.ppid).or_default().push(index);
    }
    let by_pid: HashMap<u32, usize> = all
        .iter()
        .enumerate()
        .map(|(index, &(pid, _))| (pid, index))
        .collect();
    let mut seen = HashSet::new();
    let mut queue: Vec<usize> = roots
        .iter()
        .filter_map(|pid| by_pid.get(pid).copied())
        .collect();
    let mut selected = Vec::new();
    while let Some(index) = queue.pop() {
        let (pid, stat) = all[index];
        if !seen.insert(pid) {
            continue;
        }
        selected.push((pid, stat));
        queue.extend(children.get(&pid).into_iter().flatten());
    }
    selected
}

/// Time since boot, in the unit of the stat times.
fn uptime_ticks() -> Option<u64> {
    let uptime = fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    Some((seconds * USER_HZ) as u64)
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

/// ppid, utime + stime and starttime (fields 4, 14, 15 and 22) of `/proc/<pid>/stat`. The
/// command name in field 2 may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().take(20).collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

/// The PSS of `pid` in bytes, or its RSS where the PSS cannot be read; 0 for kernel threads.
fn process_memory(pid: u32) -> u64 {
    let field = |file: &str, name: &str| {
        let text = fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
        parse_kib_field(&text, name)
    };
    field("smaps_rollup", "Pss:")
        .or_else(|| field("status", "VmRSS:"))
        .unwrap_or(0)
}

/// The `name` line (`Pss:`, `VmRSS:`) of a `/proc` file given in kB, in bytes.
pub fn parse_kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "1234 (my (weird) proc) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 4 0 100 1000000 300";
        let expected = Stat {
            ppid: 1,
            cpu_ticks: 325,
            start_ticks: 100,
        };
        assert_eq!(parse_stat(stat), Some(expected));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_come_with_their_ancestor_once() {
        let stat = |ppid| Stat {
            ppid,
            cpu_ticks: 0,
            start_ticks: 0,
        };
        // 10 → 11 → 12, 10 → 13; 20 is unrelated.
        let all = [
            (10, stat(1)),
            (11, stat(10)),
            (12, stat(11)),
            (13, stat(10)),
            (20, stat(1)),
        ];
        let mut pids: Vec<u32> = with_descendants(&[10, 12], &all)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.sort();
        assert_eq!(pids, [10, 11, 12, 13]);
    }

    #[test]
    fn a_process_started_during_the_phase_counts_from_its_start() {
        // The root sleeps; the shell it starts after the phase began burns some CPU and
        // is first seen at the end of the phase, all of that CPU in it.
        let mut root = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 0.3; sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 1' & sleep 1.5",
            ])
            .spawn()
            .expect("sh");
        let mut sampler = ProcSampler::new(ServerSelector::Pids(vec![root.id()]));
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let usage = sampler.end_phase();
        root.wait().ok();
        assert!(usage.processes >= 3, "{usage:?}");
        assert!(usage.cpu_s > 0.0, "{usage:?}");
    }

    #[test]
    fn parses_memory_fields() {
        let status = "Name:\tbeam.smp\nVmPeak:\t 9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(2 * 1024 * 1024));
        assert_eq!(parse_kib_field("Name:\tkthreadd\n", "VmRSS:"), None);
        let rollup = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  22708 kB\nPss:  3816 kB\nPss_Dirty: 3321 kB\n";
        assert_eq!(parse_kib_field(rollup, "Pss:"), Some(3816 * 1024));
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
        // Other tests of this process may have children running.
        assert!(usage.processes >= 1, "{usage:?}");
        assert!(usage.cpu_s > 0.0, "cpu {usage:?}");
        assert!(usage.memory_end_bytes > 0 && usage.memory_max_bytes >= usage.memory_end_bytes);
    }

    #[test]
    fn missing_processes_count_as_nothing() {
        let mut sampler = ProcSampler::new(ServerSelector::Pids(vec![u32::MAX]));
        assert_eq!(sampler.end_phase(), ServerUsage::default());
    }
}
