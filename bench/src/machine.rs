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
