//! Scenario 2, command round trips through the whole stack (gateway →
//! relay → orchestrator → relay → gateway): `POST /api/v1/projects` and
//! `POST /api/v1/runners` with their default wait, from request to 201, at
//! a fixed rate; the sustained rate of project creations; and for each
//! runner the time from its launch request until the gateway shows it
//! running under a real supervisor node with the simulated agent.

use crate::report::{Figure, ScenarioResult, Size};
use crate::stack::{self, InProcess, Services};
use crate::stats::{self, Pacer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Project creations offered a second, and for how long.
    project_rate: f64,
    project_span: Duration,
    /// Concurrent clients of the sustained-rate phase, and its length.
    clients: usize,
    sustained_span: Duration,
    /// Launches offered a second, and for how long.
    runner_rate: f64,
    runner_span: Duration,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                project_rate: 10.0,
                project_span: Duration::from_secs(20),
                clients: 8,
                sustained_span: Duration::from_secs(15),
                runner_rate: 2.0,
                runner_span: Duration::from_secs(15),
            },
            Size::Smoke => Self {
                project_rate: 10.0,
                project_span: Duration::from_millis(300),
                clients: 2,
                sustained_span: Duration::from_millis(300),
                runner_rate: 4.0,
                runner_span: Duration::from_millis(500),
            },
        }
    }
}

/// How long the simulated agent keeps running: long enough to be seen
/// running, short enough that the node is empty soon after.
const AGENT_SCRIPT: &str = r#"sim:{"run_for_ms":3000,"turn_delay_ms":500}"#;

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let stack = InProcess::start(Services {
        orchestrator: true,
        relay: true,
    })
    .await?;
    let outcome = measure(&stack, Shape::of(size), r).await;
    stack.finish(outcome, r).await
}

async fn measure(stack: &InProcess, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    stack::wait_ready(&http, &stack.url("/readyz")).await?;
    let root = stack.root();
    let (_node, mut node) = stack::start_node(
        &stack.env,
        &stack.scratch,
        &root,
        vec![("STRATAVORE__NODE__CAPACITY".into(), "1000".into())],
    )
    .await?;
    let admin = stack.env.db.admin_pool().await?;
    let outcome = async {
        stack::wait_registered(&admin).await?;
        // Warm up every hop once.
        create_project(&http, stack, "warm", &root).await?;

        let creates = paced(shape.project_rate, shape.project_span, |i, due| {
            let http = http.clone();
            let url = stack.url("/api/v1/projects");
            let body = project_body(&format!("paced-{i}"), &root);
            async move {
                post_created(&http, &url, &body).await?;
                anyhow::Ok(due.elapsed())
            }
        })
        .await?;
        let sustained = sustained_creates(&http, stack, &root, shape).await?;

        std::fs::create_dir_all(root.join("bench"))?;
        create_project(&http, stack, "bench", &root).await?;
        let launches = paced(shape.runner_rate, shape.runner_span, |_, due| {
            let http = http.clone();
            let stack_url = stack.url("");
            async move { launch_until_running(&http, &stack_url, due).await }
        })
        .await?;
        anyhow::Ok((creates, sustained, launches))
    }
    .await;
    let _ = node.terminate().await;
    admin.close().await;
    let (creates, sustained, launches) = outcome?;

    let creates = summary(&creates, "project creations")?;
    let (to_201, to_running): (Vec<Duration>, Vec<Duration>) = launches.into_iter().unzip();
    let launches = summary(&to_201, "launches")?;
    let running = summary(&to_running, "launches")?;
    r.param("project_rate_per_s", shape.project_rate)
        .param("project_requests", creates.count as u64)
        .param("sustained_clients", shape.clients as u64)
        .param("runner_rate_per_s", shape.runner_rate)
        .param("runner_requests", launches.count as u64)
        .param("wait", "default (5 s); every answer checked to be 201")
        .param(
            "agent",
            format!("stratavore-sim-agent, profile demo, prompt {AGENT_SCRIPT}"),
        )
        .param(
            "services",
            "orchestrator, gateway, relay in the bench process; runner-supervisor binary",
        );
    let [p50, p99] = Figure::percentiles(&creates, |p| format!("POST /projects {p}"));
    r.push(p50).push(p99);
    r.push(Figure::plain(
        "POST /projects sustained",
        sustained,
        "creates/s",
    ));
    let [p50, p99] = Figure::percentiles(&launches, |p| format!("POST /runners {p}"));
    r.push(p50).push(p99);
    let [p50, p99] = Figure::percentiles(&running, |p| format!("launch to running {p}"));
    r.push(p50).push(p99);
    r.note("latency is timed from when each request was due (open loop), so a slow answer cannot lower the offered rate");
    Ok(())
}

fn summary(samples: &[Duration], what: &str) -> anyhow::Result<stats::LatencySummary> {
    stats::summarise(samples).ok_or_else(|| anyhow::anyhow!("no {what} were measured"))
}

fn project_body(name: &str, root: &std::path::Path) -> Value {
    json!({"name": name, "path": root.join(name), "max_concurrent_runners": 1000})
}

async fn create_project(
    http: &reqwest::Client,
    stack: &InProcess,
    name: &str,
    root: &std::path::Path,
) -> anyhow::Result<Value> {
    post_created(
        http,
        &stack.url("/api/v1/projects"),
        &project_body(name, root),
    )
    .await
}

/// POST and insist on 201.
async fn post_created(http: &reqwest::Client, url: &str, body: &Value) -> anyhow::Result<Value> {
    let response = http.post(url).json(body).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(
        status.as_u16() == 201,
        "POST {url} answered {status}: {text}"
    );
    Ok(serde_json::from_str(&text)?)
}

/// Run `op(i, due)` at `rate` a second for `span`, each in its own task
/// started when due (an open loop); each op times itself from `due`.
async fn paced<F, Fut, T>(rate: f64, span: Duration, op: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(u64, Instant) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let pacer = Pacer::new(rate);
    let count = pacer.count_in(span).max(1);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = start + pacer.due(i);
        tokio::time::sleep_until(due.into()).await;
        tasks.push(tokio::spawn(op(i, due)));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Creations a second with `shape.clients` clients each creating one
/// project after another.
async fn sustained_creates(
    http: &reqwest::Client,
    stack: &InProcess,
    root: &std::path::Path,
    shape: Shape,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let deadline = started + shape.sustained_span;
    let tasks: Vec<_> = (0..shape.clients)
        .map(|c| {
            let http = http.clone();
            let url = stack.url("/api/v1/projects");
            let root = root.to_owned();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let body = project_body(&format!("sustained-{c}-{done}"), &root);
                    post_created(&http, &url, &body).await?;
                    done += 1;
                }
                anyhow::Ok(done)
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    stats::rate(done, started.elapsed()).ok_or_else(|| anyhow::anyhow!("no creations timed"))
}

/// Launch a runner and poll it until it runs: (due to 201, due to
/// running).
async fn launch_until_running(
    http: &reqwest::Client,
    base: &str,
    started: Instant,
) -> anyhow::Result<(Duration, Duration)> {
    let body =
        json!({"project": "bench", "profile": "demo", "prompt": AGENT_SCRIPT, "mode": "new"});
    let runner = post_created(http, &format!("{base}/api/v1/runners"), &body).await?;
    let answered = started.elapsed();
    let id = runner["id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("a launch's answer has no id: {runner}"))?
        .to_owned();
    loop {
        let view: Value = http
            .get(format!("{base}/api/v1/runners/{id}"))
            .send()
            .await?
            .json()
            .await?;
        match view["state"].as_str() {
            Some("running") => return Ok((answered, started.elapsed())),
            Some("exited" | "failed" | "lost" | "rejected" | "cancelled") => {
                anyhow::bail!("runner {id} ended before it was seen running: {view}")
            }
            _ => {}
        }
        anyhow::ensure!(
            started.elapsed() < stack::READY_WITHIN,
            "runner {id} was not running within {:?}: {view}",
            stack::READY_WITHIN
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
