//! Scenario 4, footprint: the idle resident memory of each service binary
//! (the gateway after its embedding model's idle release), and the cold
//! start of `stratavore up` with Postgres and RabbitMQ already running:
//! from the command's start until it returns, which it does once every
//! service's `/readyz` answers 200.

use crate::machine::rss_bytes;
use crate::report::{Figure, ScenarioResult, Size, Target};
use crate::stack::{self, sibling_binary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stratavore_testkit::{ServiceProcess, TestEnv};

/// The services as `stratavore up` runs them, with the ports it waits on.
const SERVICES: &[&str] = &[
    "session-orchestrator",
    "runner-supervisor",
    "agent-registry",
    "api-gateway",
    "outbox-relay",
];
/// The fixed health ports `stratavore up` starts the services on.
const UP_PORTS: &[u16] = &[7480, 7481, 7482, 7483, 7484];

#[derive(Debug, Clone, Copy)]
struct Shape {
    /// How long the services idle after ready before their RSS is read.
    idle: Duration,
    /// The gateway's model release (shorter than `idle`).
    idle_release: Duration,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                idle: Duration::from_secs(15),
                idle_release: Duration::from_secs(5),
            },
            Size::Smoke => Self {
                idle: Duration::from_millis(600),
                idle_release: Duration::from_millis(200),
            },
        }
    }
}

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let shape = Shape::of(size);
    let env = TestEnv::new().await?;
    let scratch = stratavore_testkit::scratch_dir().join(format!(
        "bench-footprint-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::create_dir_all(scratch.join("root"))?;
    let scratch = scratch.canonicalize()?;
    let outcome = async {
        idle_rss(&env, &scratch, shape, r).await?;
        cold_start(&env, &scratch, r).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    env.cleanup().await?;
    outcome
}

async fn idle_rss(
    env: &TestEnv,
    scratch: &Path,
    shape: Shape,
    r: &mut ScenarioResult,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut running: Vec<(&str, u16, ServiceProcess)> = Vec::new();
    for service in SERVICES {
        let port = stack::free_port()?;
        let process = if *service == "runner-supervisor" {
            stack::start_node(
                env,
                scratch,
                &scratch.join("root"),
                vec![stack::listen_on(port)],
            )
            .await?
            .1
        } else {
            let mut extra = Vec::new();
            if *service == "api-gateway" {
                extra.push((
                    "STRATAVORE__SEARCH__IDLE_RELEASE_MS".to_owned(),
                    shape.idle_release.as_millis().to_string(),
                ));
            }
            stack::start_binary(env, service, port, extra).await?
        };
        running.push((service, port, process));
    }
    for (_, port, _) in &running {
        stack::wait_ready(&http, &format!("http://127.0.0.1:{port}/readyz")).await?;
    }
    tokio::time::sleep(shape.idle).await;
    let mut total = 0.0;
    for (service, _, process) in &running {
        let pid = process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{service} exited while idle"))?;
        let mib = crate::stats::mib(rss_bytes(pid)?);
        total += mib;
        r.push(
            Figure::plain(&format!("idle RSS {service}"), mib, "MiB").target(Target::AtMost(30.0)),
        );
    }
    r.push(Figure::plain("idle RSS, five services", total, "MiB"));
    for (_, _, mut process) in running {
        let _ = process.terminate().await;
    }
    r.param("idle_after_ready_s", shape.idle.as_secs_f64())
        .param(
            "gateway_search_idle_release_ms",
            shape.idle_release.as_millis() as u64,
        )
        .param("rss_source", "VmRSS of /proc/<pid>/status");
    Ok(())
}

/// Time `stratavore up` into a local folder of its own (the installed
/// agent CLIs and model linked in, so nothing downloads), against this
/// run's database and broker prefix. `up` waits on fixed ports; when any
/// is taken (a stack of `make up` is running) the figure is left out and
/// the note says why, rather than timing someone else's services.
async fn cold_start(env: &TestEnv, scratch: &Path, r: &mut ScenarioResult) -> anyhow::Result<()> {
    if let Some(port) = UP_PORTS
        .iter()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", **p)).is_err())
    {
        r.note(format!(
            "cold start of `stratavore up` not measured: port {port} is in use (a stack is already up)"
        ));
        return Ok(());
    }
    let local = scratch.join("local");
    std::fs::create_dir_all(&local)?;
    let shared = stratavore_testkit::paths::local_dir().canonicalize()?;
    for linked in ["agents", "models"] {
        std::os::unix::fs::symlink(shared.join(linked), local.join(linked))?;
    }
    let node = format!(
        "bench-up-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let root = scratch.join("root").to_string_lossy().into_owned();
    env.broker
        .track_node(&node, &[stratavore_events::process::root_key(&root)]);
    let started = Instant::now();
    let output = tokio::process::Command::new(sibling_binary("stratavore")?)
        .arg("up")
        .env("STRATAVORE_LOCAL_DIR", &local)
        .env("STRATAVORE__DATABASE__URL", env.db.url())
        .env("STRATAVORE__BROKER__URL", env.broker.url())
        .env("STRATAVORE__BROKER__PREFIX", env.broker.prefix())
        .env("STRATAVORE__NODE__ID", &node)
        .env("STRATAVORE__NODE__ROOTS", &root)
        .env("STRATAVORE__NODE__DATA_DIR", scratch.join("up-node"))
        .env(
            "STRATAVORE__NODE__SHIM_PATH",
            sibling_binary("stratavore-shim")?,
        )
        .kill_on_drop(true)
        .output()
        .await?;
    let elapsed = started.elapsed();
    let stopped = stop_up_services(&local.join("run")).await;
    anyhow::ensure!(
        output.status.success(),
        "stratavore up failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    stopped?;
    r.push(
        Figure::plain("cold start of stratavore up", elapsed.as_secs_f64(), "s")
            .target(Target::AtMost(2.0)),
    );
    r.note("cold start: Postgres and RabbitMQ already running, agent CLIs and model already installed; the time includes provisioning's idempotent checks");
    Ok(())
}

/// SIGTERM every service `up` started (by the pids it wrote) and wait for
/// each to go.
async fn stop_up_services(run_dir: &Path) -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for service in SERVICES {
        let file: PathBuf = run_dir.join(format!("{service}.pid"));
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(raw) = text.trim().parse::<i32>()
            && let Some(pid) = rustix::process::Pid::from_raw(raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            pids.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for pid in pids {
        // Not our children (up spawned them), so poll for their exit.
        while rustix::process::test_kill_process(pid).is_ok() {
            anyhow::ensure!(Instant::now() < deadline, "a service of `up` did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}
