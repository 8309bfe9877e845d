//! Scenario 7, supervision at scale: N demo runners alive under one
//! supervisor node, each agent taking a turn (and reporting its usage)
//! every second. Runners are launched in waves until N run or the stack
//! falls behind (a launch not approved within its wait, or usage applied
//! later than the lag target for half a minute after a wave: launching
//! holds meanwhile, and waves the stack cannot catch up with are killed
//! again). Measured over a window once all run: how
//! many run, the supervisor's CPU and its resident memory per runner
//! (above its idle footprint), and the lag from each usage event's time to
//! when the orchestrator and the gateway applied it.

use crate::machine::{cpu_seconds, rss_bytes};
use crate::report::{Figure, ScenarioResult, Size, Target};
use crate::stack::{self, InProcess, Services};
use crate::stats;
use futures::StreamExt;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde_json::json;
use std::time::{Duration, Instant};

const USAGE: &str = "io.stratavore.process.usage_reported.v1";
/// The usage lag target, and the lag at which launching stops.
const LAG_TARGET: Duration = Duration::from_secs(2);
/// How long the launches may take before the window starts anyway.
const RUNNING_WITHIN: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Shape {
    runners: usize,
    /// How long usage is watched once every runner runs.
    window: Duration,
    /// Launch requests in flight at once.
    launchers: usize,
}

impl Shape {
    fn of(size: Size) -> Self {
        match size {
            Size::Full => Self {
                runners: 1000,
                window: Duration::from_secs(60),
                launchers: 16,
            },
            Size::Smoke => Self {
                runners: 3,
                window: Duration::from_secs(2),
                launchers: 3,
            },
        }
    }
}

/// Run it.
pub async fn run(size: Size, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let shape = Shape::of(size);
    raise_limits(shape.runners, r)?;
    let stack = InProcess::start(Services {
        orchestrator: true,
        relay: true,
    })
    .await?;
    let outcome = measure(&stack, shape, r).await;
    stack.finish(outcome, r).await
}

/// Every runner is a shim and an agent process with a handful of open
/// files each, all under this user: raise the soft limits to the hard ones
/// when they are lower, and refuse to start when even those are too low.
fn raise_limits(runners: usize, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let needs = [
        (Resource::Nproc, "nproc", runners * 4),
        (Resource::Nofile, "nofile", runners * 8),
    ];
    for (resource, name, need) in needs {
        let limit = getrlimit(resource);
        let before = limit.current;
        if limit.current < limit.maximum || (limit.maximum.is_none() && limit.current.is_some()) {
            setrlimit(
                resource,
                Rlimit {
                    current: limit.maximum,
                    maximum: limit.maximum,
                },
            )?;
        }
        let after = getrlimit(resource).current;
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
        r.param(
            &format!("rlimit_{name}"),
            format!("{} → {}", show(before), show(after)),
        );
        anyhow::ensure!(
            after.is_none_or(|a| a >= need as u64),
            "ulimit {name} is {} but {runners} runners need about {need}",
            show(after)
        );
    }
    Ok(())
}

/// What one run saw, before it is turned into figures.
struct Observed {
    /// The supervisor's RSS with no runner, and with all of them.
    idle_rss: u64,
    busy_rss: u64,
    /// Its CPU over the window, in cores.
    cpu: f64,
    /// Usage lags per consuming service.
    lags: Vec<(&'static str, Vec<Duration>)>,
    /// From the first launch until all ran (or the wait ended).
    launch_time: Duration,
    /// Runners running when the window began.
    runners: usize,
    /// Whether all had ended after the kills.
    ended: bool,
    /// How the launches were answered.
    launches: Launches,
    /// Launches approved.
    runners_launched: usize,
    /// Kills not accepted.
    unkilled: usize,
}

async fn measure(stack: &InProcess, shape: Shape, r: &mut ScenarioResult) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    stack::wait_ready(&http, &stack.url("/readyz")).await?;
    let root = stack.root();
    let (_node, mut node) = stack::start_node(
        &stack.env,
        &stack.scratch,
        &root,
        vec![(
            "STRATAVORE__NODE__CAPACITY".into(),
            shape.runners.to_string(),
        )],
    )
    .await?;
    let admin = stack.env.db.admin_pool().await?;
    let outcome = async {
        stack::wait_registered(&admin).await?;
        let pid = node
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the supervisor exited"))?;
        install_lag_triggers(&admin).await?;
        let project = json!({"name": "scale", "path": root.join("scale"),
                             "max_concurrent_runners": shape.runners});
        std::fs::create_dir_all(root.join("scale"))?;
        post(&http, &stack.url("/api/v1/projects"), &project).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss = rss_bytes(pid)?;

        let launched = Instant::now();
        let launches = launch_all(&http, &admin, stack, shape).await?;
        let runners_launched = launches.approved + launches.late - launches.withdrawn;
        let running = wait_running(&admin, runners_launched).await?;
        let launch_time = launched.elapsed();

        let cpu_before = cpu_seconds(pid)?;
        let window_start = chrono::Utc::now();
        let started = Instant::now();
        tokio::time::sleep(shape.window).await;
        let cpu = (cpu_seconds(pid)? - cpu_before) / started.elapsed().as_secs_f64();
        let window_end = chrono::Utc::now();
        let busy_rss = rss_bytes(pid)?;
        let lags = usage_lags(&admin, window_start, window_end).await?;
        // Every runner not ended, the launches approved after their wait
        // gave up included: the bench has no id for those.
        let alive: Vec<String> = sqlx::query_scalar(
            "SELECT runner_id::text FROM gateway.runners
             WHERE state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled')",
        )
        .fetch_all(&admin)
        .await?;
        let unkilled = kill_all(&http, stack, &alive).await;
        let ended = wait_ended(&admin).await?;
        anyhow::Ok(Observed {
            idle_rss,
            busy_rss,
            cpu,
            lags,
            launch_time,
            runners: running,
            ended,
            launches,
            runners_launched,
            unkilled,
        })
    }
    .await;
    // A node that stops leaves its agents to their leases, which end them
    // within the liveness TTL even when the kills above did not arrive.
    let _ = node.terminate().await;
    admin.close().await;
    let Observed {
        idle_rss,
        busy_rss,
        cpu,
        lags,
        launch_time,
        runners,
        ended,
        launches,
        runners_launched,
        unkilled,
    } = outcome?;
    if launches.late > 0 {
        r.note(format!(
            "launching stopped after {} of {} runners: {} launches of the last wave were not \
             approved within the request's 30 s wait (the stack had fallen behind)",
            sent_total(&launches),
            shape.runners,
            launches.late
        ));
    }
    if let Some((service, lag)) = &launches.behind {
        r.note(format!(
            "launching stopped after {} of {} runners: the usage the {service} applied in \
             the last 3 s was still applied {:.1} s after its time at p99, past the {} s \
             target, {} s after the last wave (the stack had fallen behind); the last {} \
             runners launched were killed again, a wave at a time, and the stack {} \
             (up to {} s after each)",
            sent_total(&launches),
            shape.runners,
            lag.as_secs_f64(),
            LAG_TARGET.as_secs(),
            CATCH_UP_WITHIN.as_secs(),
            launches.withdrawn,
            if launches.recovered {
                "caught up"
            } else {
                "had still not caught up after the last"
            },
            CATCH_UP_WITHIN.as_secs()
        ));
    }
    if launches.failed > 0 {
        r.note(format!(
            "{} launches were refused or unanswered",
            launches.failed
        ));
    }
    if unkilled > 0 {
        r.note(format!("{unkilled} kill requests were not accepted"));
    }
    if runners < runners_launched {
        r.note(format!(
            "only {runners} of the {runners_launched} accepted runners were running after {} s: \
             the figures are for {runners}",
            RUNNING_WITHIN.as_secs()
        ));
    }
    if !ended {
        r.note("not every runner had ended within the wait after the kills; the node's stop left the rest to their leases");
    }
    anyhow::ensure!(
        runners > 0,
        "no runner was running after {RUNNING_WITHIN:?}"
    );

    let per_runner_kib = stats::kib(busy_rss.saturating_sub(idle_rss)) / runners as f64;
    r.param("runners_requested", shape.runners as u64)
        .param("runners_running", runners as u64)
        .param("window_s", shape.window.as_secs_f64())
        .param(
            "agent",
            "stratavore-sim-agent (profile demo), a turn with usage every 1000 ms",
        )
        .param("launch_concurrency", shape.launchers as u64)
        .param("launch_holds", launches.holds as u64)
        .param("runners_withdrawn", launches.withdrawn as u64)
        .param("launch_held_s", launches.held.as_secs_f64())
        .param("launches_approved_within_wait", launches.approved as u64)
        .param("launches_approved_late", launches.late as u64)
        .param("all_running_after_s", launch_time.as_secs_f64())
        .param("supervisor_idle_rss_mib", stats::mib(idle_rss))
        .param("supervisor_busy_rss_mib", stats::mib(busy_rss));
    r.push(
        Figure::plain("runners running", runners as f64, "runners")
            .target(Target::AtLeast(shape.runners as f64)),
    );
    r.push(
        Figure::plain("supervisor memory per runner", per_runner_kib, "KiB")
            .target(Target::AtMost(100.0)),
    );
    r.push(Figure::plain("supervisor CPU", cpu * 100.0, "% of a core"));
    for (service, samples) in lags {
        let s = stats::summarise(&samples)
            .ok_or_else(|| anyhow::anyhow!("no usage reached the {service} in the window"))?;
        let [p50, p99] = Figure::percentiles(&s, |p| format!("usage lag {p} ({service})"));
        r.push(p50)
            .push(p99.target(Target::AtMost(LAG_TARGET.as_secs_f64() * 1000.0)));
    }
    r.note("usage lag: from the usage event's own time (when the node derived it from the transcript) to the inbox row's update to applied");
    Ok(())
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let response = http.post(url).json(body).send().await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "POST {url} answered {status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

fn sent_total(l: &Launches) -> usize {
    l.approved + l.late + l.failed
}

/// What the launches were answered.
struct Launches {
    /// Approved within the request's 30 s wait (201).
    approved: usize,
    /// Accepted but not approved within the wait (202): they run once the
    /// orchestrator catches up.
    late: usize,
    /// Refused, or no answer.
    failed: usize,
    /// The service whose usage lag stayed past the target for all of
    /// [`CATCH_UP_WITHIN`] after a wave, with its lag then.
    behind: Option<(String, Duration)>,
    /// How often launching held, and for how long in all, while the stack
    /// caught up with a wave.
    holds: usize,
    held: Duration,
    /// The runners of the last waves, killed when the stack fell behind,
    /// and whether the stack then caught up.
    withdrawn: usize,
    recovered: bool,
}

/// Waves withdrawn at most once the stack fell behind.
const MAX_WITHDRAWN_WAVES: usize = 8;
/// How long launching holds for the stack to catch up with a wave before
/// it counts as fallen behind.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);

/// Launch the runners in waves of `shape.launchers` requests, each
/// request waiting up to 30 s for its approval, until a wave has a launch
/// not approved in that time (202) or refused, or the stack falls behind.
/// A wave is a burst the steady state never sees (sixteen launch decisions,
/// appends and process starts at once on two cores), and it can put the
/// usage applied just after it past the lag target: launching then holds
/// until the last seconds' lag is back within the target, as a user
/// watching the dashboard would. A stack still past the target after
/// [`CATCH_UP_WITHIN`] has fallen behind (its queues hold more than it
/// applies), and more runners would only grow that backlog, and the run,
/// without end: the last waves are killed again until it catches up, so
/// that the window measures a count the stack keeps up with. A late launch
/// still runs; it is measured and killed with the rest. (Approvals alone were the signal until the orchestrator
/// judged runs of usage together: then launches were approved at once
/// while the gateway's backlog grew, and the machine was past saturation
/// long before they were late. Then, until launching held, one wave's lag
/// ended the launches: runs stopped anywhere from 416 to 672 runners, at
/// a steady-state lag p99 of 0.3-1.7 s.)
async fn launch_all(
    http: &reqwest::Client,
    admin: &sqlx::PgPool,
    stack: &InProcess,
    shape: Shape,
) -> anyhow::Result<Launches> {
    let url = stack.url("/api/v1/runners?wait=30");
    // Long enough to outlive the launches and the window; killed after,
    // and bounded in case a kill never arrives.
    let prompt = r#"sim:{"run_for_ms":900000,"turn_delay_ms":1000}"#;
    let body = json!({"project": "scale", "profile": "demo", "prompt": prompt, "mode": "new"});
    let mut launches = Launches {
        approved: 0,
        late: 0,
        failed: 0,
        behind: None,
        holds: 0,
        held: Duration::ZERO,
        withdrawn: 0,
        recovered: false,
    };
    // Every launch accepted, in order, so the last waves can be withdrawn.
    let mut launched: Vec<String> = Vec::new();
    let mut sent = 0;
    while sent < shape.runners
        && launches.late == 0
        && launches.failed == 0
        && launches.behind.is_none()
    {
        let wave = shape.launchers.min(shape.runners - sent);
        let answers = futures::future::join_all((0..wave).map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let response = http.post(&url).json(&body).send().await.ok()?;
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                Some((status, body["id"].as_str().map(str::to_owned)))
            }
        }))
        .await;
        for answer in answers {
            match answer {
                Some((201, id)) => {
                    launches.approved += 1;
                    launched.extend(id);
                }
                Some((202, id)) => {
                    launches.late += 1;
                    launched.extend(id);
                }
                _ => launches.failed += 1,
            }
        }
        sent += wave;
        if past_target(admin).await?.is_none() {
            continue;
        }
        launches.holds += 1;
        let (still, held) = catch_up(admin).await?;
        launches.held += held;
        launches.behind = still;
    }
    // Fallen behind: withdraw the last waves, one at a time, until the
    // stack catches up, so that the window measures a count it keeps up
    // with (the largest count within the target, not one it is drowning
    // under: a backlog also swells the supervisor's memory, as the broker
    // throttles its publishing).
    if launches.behind.is_some() {
        for _ in 0..MAX_WITHDRAWN_WAVES {
            let wave = launched.split_off(launched.len().saturating_sub(shape.launchers));
            if wave.is_empty() {
                break;
            }
            launches.withdrawn += wave.len() - kill_all(http, stack, &wave).await;
            if catch_up(admin).await?.0.is_none() {
                launches.recovered = true;
                break;
            }
        }
    }
    Ok(launches)
}

/// Hold until the usage applied in the last seconds is back within the
/// lag target, at most [`CATCH_UP_WITHIN`]: the service still past it
/// then, with its last lag (None once caught up), and how long it held.
async fn catch_up(admin: &sqlx::PgPool) -> anyhow::Result<(Option<(String, Duration)>, Duration)> {
    let held = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let still = past_target(admin).await?;
        if still.is_none() || held.elapsed() >= CATCH_UP_WITHIN {
            return Ok((still, held.elapsed()));
        }
    }
}

/// The service whose usage applied in the last seconds is past the lag
/// target, with its lag.
async fn past_target(admin: &sqlx::PgPool) -> anyhow::Result<Option<(String, Duration)>> {
    Ok(recent_lag(admin)
        .await?
        .filter(|(_, lag)| *lag > LAG_TARGET))
}

/// The p99 lag of the usage events a service applied in the last three
/// seconds (the statistic of the lag target: one event held up behind a
/// launch wave's decisions is not a stack that fell behind), for the
/// service with the larger one; None while neither applied any (no runner
/// has reported yet). The window's start is `now()`, not
/// `clock_timestamp()`: a volatile bound cannot be an index condition, and
/// the whole table was read twice a second while launching held (171 ms of
/// Postgres a call at 800 runners, a quarter of a core taken from the
/// stack it measures).
async fn recent_lag(admin: &sqlx::PgPool) -> anyhow::Result<Option<(String, Duration)>> {
    let rows: Vec<(String, Option<f64>)> = sqlx::query_as(
        "SELECT a.service,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.at - t.time)::float8)
         FROM bench.applied a CROSS JOIN unnest(a.times) AS t(time)
         WHERE a.at > now() - interval '3 seconds'
         GROUP BY a.service",
    )
    .fetch_all(admin)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(service, lag)| Some((service, Duration::from_secs_f64(lag?.max(0.0)))))
        .max_by_key(|(_, lag)| *lag))
}

/// Wait until `count` runners run, or [`RUNNING_WITHIN`] passed; how many
/// run then. A machine that cannot start them all in that time is a
/// finding to report, not a reason to measure nothing.
async fn wait_running(admin: &sqlx::PgPool, count: usize) -> anyhow::Result<usize> {
    let deadline = Instant::now() + RUNNING_WITHIN;
    loop {
        let running: i64 =
            sqlx::query_scalar("SELECT count(*) FROM gateway.runners WHERE state = 'running'")
                .fetch_one(admin)
                .await?;
        let running = usize::try_from(running)?;
        if running >= count || Instant::now() >= deadline {
            return Ok(running);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait (a while) until no runner is left alive, so the node reaps every
/// shim before it is stopped; whether they all ended.
async fn wait_ended(admin: &sqlx::PgPool) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let alive: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gateway.runners
             WHERE state NOT IN ('exited', 'failed', 'lost', 'rejected', 'cancelled')",
        )
        .fetch_one(admin)
        .await?;
        if alive == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Kill every runner through the API; how many kills were not accepted
/// (the node's stop and the agents' leases end those anyway).
async fn kill_all(http: &reqwest::Client, stack: &InProcess, ids: &[String]) -> usize {
    let results: Vec<bool> = futures::stream::iter(ids)
        .map(|id| {
            let (http, url) = (
                http.clone(),
                stack.url(&format!("/api/v1/runners/{id}/kill")),
            );
            async move { post(&http, &url, &json!({})).await.is_ok() }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.iter().filter(|ok| !**ok).count()
}

/// Stamp when each usage event is applied by the orchestrator and by the
/// gateway (`clock_timestamp()` inside the applying transaction), beside
/// the event's own time: launching reads the last seconds' lags after
/// every wave and twice a second while it holds, and a join with the
/// supervisor's log for that took 170 ms of Postgres a time at 768
/// runners, a third of a core while holding.
///
/// One row per applying statement, with the ids and times of the usage it
/// applied as arrays: the stamp runs inside the very inserts it times
/// (most rows are applied on receipt). A row per event (two indexes, a
/// unique check) cost 44 µs of Postgres per event in a run at 864 runners,
/// 45 s over the run, a tenth of what the gateway's own statements took;
/// alone on an idle machine 6.9 µs per event against 0.14 µs as arrays.
async fn install_lag_triggers(admin: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query("CREATE SCHEMA bench").execute(admin).await?;
    sqlx::query(
        "CREATE TABLE bench.applied (service text NOT NULL, at timestamptz NOT NULL,
                                     ids uuid[] NOT NULL, times timestamptz[] NOT NULL)",
    )
    .execute(admin)
    .await?;
    // What launching reads after each wave: the last seconds' lags.
    sqlx::query("CREATE INDEX ON bench.applied (at)")
        .execute(admin)
        .await?;
    // Once per statement over its transition table, not a function run
    // for every row (a per-row PL/pgSQL call for each of a batch's rows,
    // usage or not, added to what the stack was measured doing).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION bench.record_applied() RETURNS trigger LANGUAGE plpgsql
         SECURITY DEFINER SET search_path = bench AS $$
         BEGIN
             IF TG_OP = 'INSERT' THEN
                 INSERT INTO bench.applied
                 SELECT TG_TABLE_SCHEMA, clock_timestamp(), array_agg(message_id),
                        array_agg((message->>'time')::timestamptz)
                 FROM new_rows WHERE status = 'applied' AND type = '{USAGE}'
                 HAVING count(*) > 0;
             ELSE
                 INSERT INTO bench.applied
                 SELECT TG_TABLE_SCHEMA, clock_timestamp(), array_agg(n.message_id),
                        array_agg((n.message->>'time')::timestamptz)
                 FROM new_rows n JOIN old_rows o USING (message_id)
                 WHERE n.status = 'applied' AND o.status <> 'applied' AND n.type = '{USAGE}'
                 HAVING count(*) > 0;
             END IF;
             RETURN NULL;
         END $$"
    )))
    .execute(admin)
    .await?;
    for schema in ["orchestrator", "gateway"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER bench_applied AFTER UPDATE ON {schema}.inbox
             REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION bench.record_applied()"
        )))
        .execute(admin)
        .await?;
        // Applied on receipt: the row goes in applied.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER bench_applied_on_receipt AFTER INSERT ON {schema}.inbox
             REFERENCING NEW TABLE AS new_rows
             FOR EACH STATEMENT EXECUTE FUNCTION bench.record_applied()"
        )))
        .execute(admin)
        .await?;
    }
    Ok(())
}

/// Delete from `bench.waiting` what was applied after `since` (less
/// [`STAMPED_BEFORE_COMMIT`]); how many are still waiting, and when this
/// looked.
async fn still_waiting(
    admin: &sqlx::PgPool,
    since: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(i64, chrono::DateTime<chrono::Utc>)> {
    let checked: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(admin)
        .await?;
    // The ids first, then a lookup of each by `bench.waiting`'s index: a
    // join left to the planner (no statistics on tables this young) merged
    // the whole of `bench.waiting`, 198 ms a call at 864 runners.
    let applied: Vec<(String, Vec<uuid::Uuid>)> = sqlx::query_as(
        "SELECT a.service, array_agg(u.message_id)
         FROM bench.applied a, unnest(a.ids) AS u(message_id)
         WHERE a.at > $1
         GROUP BY a.service",
    )
    .bind(since - STAMPED_BEFORE_COMMIT)
    .fetch_all(admin)
    .await?;
    for (service, ids) in applied {
        sqlx::query("DELETE FROM bench.waiting WHERE service = $1 AND message_id = ANY($2)")
            .bind(service)
            .bind(ids)
            .execute(admin)
            .await?;
    }
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM bench.waiting")
        .fetch_one(admin)
        .await?;
    Ok((waiting, checked))
}

/// How long before its commit an applying transaction may have stamped a
/// row of `bench.applied` (its `at` is `clock_timestamp()` inside it).
const STAMPED_BEFORE_COMMIT: chrono::Duration = chrono::Duration::seconds(10);

/// Per service, the lag of each usage event timed inside the window. The
/// last ones may still be on their way: wait for them (a while), and
/// count any still not applied by then as late as they are at that moment.
///
/// The window's events are listed once, and each wait deletes from that
/// list what was applied since the last (by `bench.applied`'s index on
/// `at`, with a margin for transactions that stamped a row before the
/// last wait and committed after it; one missed would only make the wait
/// longer, never a lag wrong, since the lags are read from `bench.applied`
/// itself). Counting them afresh each time read the whole supervisor log
/// (1.0-1.3 s of Postgres a count at 480 runners, ten a second), which
/// slowed the very stragglers it waited for and so lengthened the lags it
/// was about to measure.
async fn usage_lags(
    admin: &sqlx::PgPool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    sqlx::query(
        "CREATE TABLE bench.waiting AS
         SELECT s.service, l.message_id
         FROM supervisor.log l CROSS JOIN (VALUES ('orchestrator'), ('gateway')) s(service)
         WHERE l.type = $1 AND l.time BETWEEN $2 AND $3",
    )
    .bind(USAGE)
    .bind(from)
    .bind(to)
    .execute(admin)
    .await?;
    sqlx::query("CREATE INDEX ON bench.waiting (service, message_id)")
        .execute(admin)
        .await?;
    let mut since = from;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (waiting, checked) = still_waiting(admin, since).await?;
        if waiting == 0 || Instant::now() >= deadline {
            break;
        }
        since = checked;
        // Each look reads what was applied in the margin again: looking
        // twice a second, not ten times, leaves the stragglers the CPU.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut out = Vec::new();
    for service in ["orchestrator", "gateway"] {
        let seconds: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM coalesce(a.at, clock_timestamp()) - l.time)::float8
             FROM supervisor.log l
             LEFT JOIN (SELECT u.message_id, min(a.at) AS at
                        FROM bench.applied a, unnest(a.ids) AS u(message_id)
                        WHERE a.service = $1 AND a.at >= $3
                        GROUP BY u.message_id) a ON a.message_id = l.message_id
             WHERE l.type = $2 AND l.time BETWEEN $3 AND $4",
        )
        .bind(service)
        .bind(USAGE)
        .bind(from)
        .bind(to)
        .fetch_all(admin)
        .await?;
        out.push((
            service,
            seconds
                .into_iter()
                .map(|s| Duration::from_secs_f64(s.max(0.0)))
                .collect(),
        ));
    }
    Ok(out)
}
