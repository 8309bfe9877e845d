//! The machine and the versions a figure belongs to: a throughput means
//! nothing without the cores, memory, kernel and servers it was taken on.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::process::Command;

/// The host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// The CPU's model name.
    pub cpu: String,
    /// Installed memory.
    pub memory_mib: u64,
    /// `uname -r`.
    pub kernel: String,
}

/// What was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// `SHOW server_version`.
    pub postgres: String,
    /// The server's installed pgvector.
    pub pgvector: String,
    /// `rabbitmqctl version`, else the installed package's.
    pub rabbitmq: String,
    /// `rustc --version`.
    pub rustc: String,
    /// This workspace's version.
    pub stratavore: String,
    /// `debug` or `release`: the services under test were built alike.
    pub build_profile: String,
}

impl Machine {
    /// Read it from /proc.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            memory_mib: meminfo_kib(&meminfo, "MemTotal").unwrap_or(0) / 1024,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }
}

impl Versions {
    /// Ask the servers and the toolchain.
    pub async fn detect(admin: &PgPool) -> anyhow::Result<Self> {
        let postgres: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(admin)
            .await?;
        // Provisioning creates the extension in each service database,
        // not in the maintenance one this connects to: the server's
        // installed version is what every database gets.
        let pgvector: Option<String> = sqlx::query_scalar(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'",
        )
        .fetch_optional(admin)
        .await?;
        Ok(Self {
            postgres,
            pgvector: pgvector.unwrap_or_else(|| "missing".into()),
            rabbitmq: rabbitmq_version(),
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            stratavore: env!("CARGO_PKG_VERSION").to_owned(),
            build_profile: build_profile().to_owned(),
        })
    }
}

/// The profile this very binary was compiled with, read from its own code
/// rather than from what `make` asked for: cargo's dev profile keeps debug
/// assertions, release drops them. The services it runs in process are
/// compiled into it, and the binaries it starts come from its own folder
/// ([`crate::stack::sibling_binary`]), which cargo fills per profile.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn rabbitmq_version() -> String {
    command_line("rabbitmqctl", &["version"])
        .or_else(|| command_line("dpkg-query", &["-W", "-f", "${Version}", "rabbitmq-server"]))
        .unwrap_or_else(|| "unknown".into())
}

/// The last non-empty line a command prints, when it succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Key:   123 kB` line of /proc/meminfo or /proc/<pid>/status, in KiB.
pub fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// User plus system CPU time of a process, in clock ticks, from the text
/// of its `/proc/<pid>/stat` (fields 14 and 15; the command name in field
/// 2 may hold spaces and parentheses, so fields are counted after the last
/// `)`).
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = cpu_ticks(&stat).ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// CPU seconds used so far by every process whose command name (field 2
/// of `/proc/<pid>/stat`, at most 15 bytes) is `comm`: all of Postgres's
/// backends, say. Processes that end while being read are skipped.
pub fn cpu_seconds_of_command(comm: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let ticks: u64 = dir
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| command_name(stat) == Some(comm))
        .filter_map(|stat| cpu_ticks(&stat))
        .sum();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}

/// The command name of a `/proc/<pid>/stat` text: between the first `(`
/// and the last `)`.
fn command_name(stat: &str) -> Option<&str> {
    stat.get(stat.find('(')? + 1..stat.rfind(')')?)
}

/// CPU seconds the whole machine has been busy, summed over cores.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks = busy_ticks(&stat).ok_or_else(|| anyhow::anyhow!("unreadable /proc/stat"))?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The ticks of every state but idle and I/O wait on the first (all
/// cores) line of `/proc/stat`: user nice system idle iowait irq softirq
/// steal ...
fn busy_ticks(proc_stat: &str) -> Option<u64> {
    let ticks: Vec<u64> = proc_stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let waiting = ticks.get(3)? + ticks.get(4)?;
    Some(ticks.iter().sum::<u64>() - waiting)
}

/// Whose CPU a [`CpuMeter`] reads.
#[derive(Debug, Clone, Copy)]
pub enum CpuSource {
    /// One process.
    Pid(u32),
    /// Every process of this command name ([`cpu_seconds_of_command`]).
    Command(&'static str),
}

impl CpuSource {
    fn seconds(self) -> anyhow::Result<f64> {
        match self {
            Self::Pid(pid) => cpu_seconds(pid),
            Self::Command(comm) => Ok(cpu_seconds_of_command(comm)),
        }
    }
}

/// The CPU named processes and the whole machine use over a span, in
/// cores (CPU seconds per second).
#[derive(Debug)]
pub struct CpuMeter {
    started: std::time::Instant,
    sources: Vec<(String, CpuSource, f64)>,
    machine: f64,
}

/// What a [`CpuMeter`] read.
#[derive(Debug, Clone)]
pub struct CpuUse {
    /// Each source's name and cores.
    pub by_source: Vec<(String, f64)>,
    /// The whole machine's busy cores.
    pub machine: f64,
    /// The whole machine's busy CPU seconds.
    pub machine_seconds: f64,
}

impl CpuMeter {
    /// Start reading `sources`.
    pub fn start(sources: Vec<(String, CpuSource)>) -> anyhow::Result<Self> {
        let sources = sources
            .into_iter()
            .map(|(name, source)| Ok((name, source, source.seconds()?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            started: std::time::Instant::now(),
            sources,
            machine: machine_busy_seconds()?,
        })
    }

    /// What each used since the start.
    pub fn read(&self) -> anyhow::Result<CpuUse> {
        let span = self.started.elapsed().as_secs_f64().max(f64::EPSILON);
        let by_source = self
            .sources
            .iter()
            .map(|(name, source, before)| Ok((name.clone(), (source.seconds()? - before) / span)))
            .collect::<anyhow::Result<_>>()?;
        let machine_seconds = machine_busy_seconds()? - self.machine;
        Ok(CpuUse {
            by_source,
            machine: machine_seconds / span,
            machine_seconds,
        })
    }
}

/// Resident memory of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    meminfo_kib(&status, "VmRSS")
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_counted_after_the_command_name() {
        let stat = "4242 (runner (sup) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 50 0 0 20 0 9 0 100 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(200));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn the_command_name_may_hold_parentheses() {
        assert_eq!(
            command_name("4242 (runner (sup) x) S 1"),
            Some("runner (sup) x")
        );
        assert_eq!(command_name("garbage"), None);
    }

    #[test]
    fn the_machine_is_busy_in_every_state_but_idle_and_io_wait() {
        let stat = "cpu  100 5 20 1000 30 1 2 3 0 0\ncpu0 50 2 10 500 15 0 1 1 0 0\n";
        assert_eq!(busy_ticks(stat), Some(131));
        assert_eq!(busy_ticks("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(busy_ticks("cpu  1 2 3\n"), None);
    }

    #[test]
    fn proc_lines_are_read_in_kib() {
        let status = "Name:\tgw\nVmRSS:\t   20480 kB\nVmHWM:\t 30000 kB\n";
        assert_eq!(meminfo_kib(status, "VmRSS"), Some(20480));
        assert_eq!(meminfo_kib(status, "VmSwap"), None);
        assert_eq!(
            meminfo_kib("MemTotal:  24684084 kB", "MemTotal"),
            Some(24_684_084)
        );
    }

    #[test]
    fn the_cpu_model_is_the_first_model_name() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(info).as_deref(), Some("AMD EPYC 7B13"));
    }
}
