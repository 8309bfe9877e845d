//! `stratavore-bench`: `make bench` and `make bench-smoke`. It measures
//! Stratavore against this machine's own limits in the same run and
//! reports; a slow machine never fails it, only a scenario that cannot run
//! at all does.

mod check;
mod docs;
mod load;
mod machine;
mod report;
mod scenarios;
mod stack;
mod stats;

use clap::{Parser, Subcommand};
use report::{Report, SCHEMA_VERSION, Size, Status};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "stratavore-bench",
    about = "Benchmarks of Stratavore on this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scenarios and write the results.
    Run {
        /// Every scenario tiny: proves each runs, measures nothing worth quoting.
        #[arg(long)]
        smoke: bool,
        /// Where the JSON goes.
        #[arg(long, default_value = "bench/results/latest.json")]
        out: PathBuf,
        /// The document whose generated table is regenerated (full runs only).
        #[arg(long)]
        docs: Option<PathBuf>,
        /// Only these scenarios (comma-separated keys); the rest are
        /// recorded as skipped.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Check a results file against the schema, and that every scenario ran.
    Check {
        /// The JSON to check.
        path: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,stratavore_bench=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run {
            smoke,
            out,
            docs,
            only,
        } => {
            run(
                if smoke { Size::Smoke } else { Size::Full },
                out,
                docs,
                only,
            )
            .await
        }
        Command::Check { path } => {
            let text = std::fs::read_to_string(&path)?;
            let scenarios: Vec<&str> = scenarios::all().iter().map(|s| s.id).collect();
            check::check(&text, &scenarios)?;
            println!("{}: well-formed, every scenario measured", path.display());
            Ok(())
        }
    }
}

async fn run(
    size: Size,
    out: PathBuf,
    docs_path: Option<PathBuf>,
    only: Vec<String>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = report::now_rfc3339();
    let earlier = earlier_results(&out, &only);
    let admin =
        sqlx::PgPool::connect(&stratavore_testkit::database::shared_server_url().await?).await?;
    let versions = machine::Versions::detect(&admin).await?;
    admin.close().await;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let all = scenarios::all();
    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        started_at,
        seconds: 0.0,
        size,
        machine: machine::Machine::detect(),
        versions,
        scenarios: Vec::new(),
    };
    for (i, scenario) in all.iter().enumerate() {
        let result = if !only.is_empty() && !only.iter().any(|o| o == scenario.id) {
            let kept = earlier.iter().find(|s| s.id == scenario.id).cloned();
            kept.unwrap_or_else(|| scenario.skipped("not selected (--only)"))
        } else {
            let result = scenario.run(size).await;
            print_result(&result);
            result
        };
        report.scenarios.push(result);
        report.seconds = started.elapsed().as_secs_f64();
        // Written after every scenario, the ones not reached yet listed as
        // such, so an interrupted run keeps what it measured.
        let mut so_far = report.clone();
        so_far.scenarios.extend(
            all[i + 1..]
                .iter()
                .map(|s| s.skipped("not reached: the run stopped before it")),
        );
        std::fs::write(&out, serde_json::to_string_pretty(&so_far)? + "\n")?;
    }
    println!("results: {}", out.display());
    if let Some(path) = docs_path.filter(|_| size == Size::Full) {
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, docs::splice(&doc, &docs::render(&report)))?;
        println!("table: {}", path.display());
    }
    let failed: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.status == Status::Failed)
        .map(|s| s.id.as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "scenarios that could not run: {failed:?}"
    );
    Ok(())
}

/// With `--only`, the results already in `out` of the scenarios not
/// selected, so measuring one again keeps the others (each keeps its own
/// start time and load); nothing when the file is missing or unreadable,
/// or was written by a build of another profile (the file records one
/// profile for all its figures, so debug and release are never mixed).
fn earlier_results(out: &std::path::Path, only: &[String]) -> Vec<report::ScenarioResult> {
    if only.is_empty() {
        return Vec::new();
    }
    let Some(report) = std::fs::read_to_string(out)
        .ok()
        .and_then(|text| serde_json::from_str::<Report>(&text).ok())
    else {
        return Vec::new();
    };
    if report.versions.build_profile != machine::build_profile() {
        tracing::warn!(
            earlier = %report.versions.build_profile,
            now = machine::build_profile(),
            "the earlier results are of another build profile; not keeping them"
        );
        return Vec::new();
    }
    report
        .scenarios
        .into_iter()
        .map(|mut s| {
            if s.started_at.is_empty() {
                s.started_at.clone_from(&report.started_at);
            }
            s
        })
        .collect()
}

fn print_result(r: &report::ScenarioResult) {
    println!("== {} ({:.1} s)", r.title, r.seconds);
    if let Some(reason) = &r.reason {
        println!("   could not run: {reason}");
    }
    for f in &r.figures {
        let baseline = f.baseline.as_ref().map_or(String::new(), |b| {
            format!("  baseline {} ({})", report::trim(b.value), b.name)
        });
        let ratio = f
            .ratio
            .map_or(String::new(), |x| format!("  ratio {:.0}%", x * 100.0));
        let met = match (f.target, f.met) {
            (Some(t), Some(m)) => format!(
                "  target {} {}",
                t.describe(&f.unit),
                if m { "met" } else { "NOT met" }
            ),
            _ => String::new(),
        };
        println!(
            "   {}: {} {}{baseline}{ratio}{met}",
            f.name,
            report::trim(f.value),
            f.unit
        );
    }
}
