//! The scenarios, in the priority order. Each takes the run's size
//! and fills its result; an error means it could not run at all (a slow
//! figure is never an error).

mod bare_pipeline;
mod baselines;
pub mod commands;
pub mod footprint;
pub mod pipeline;
pub mod reads;
pub mod rebuild;
pub mod search;
pub mod supervision;

use crate::machine::load_average;
use crate::report::{ScenarioResult, Size, Status};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// A scenario's body.
type Body = for<'a> fn(
    Size,
    &'a mut ScenarioResult,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>>;

/// One scenario: its key, its title and what runs it.
pub struct Scenario {
    /// Stable key, also what `--only` takes.
    pub id: &'static str,
    /// For the table.
    pub title: &'static str,
    body: Body,
}

/// Every scenario, in priority order.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            id: "event_pipeline",
            title: "Event pipeline (log → relay → RabbitMQ → inbox → projection)",
            body: |size, r| Box::pin(pipeline::run(size, r)),
        },
        Scenario {
            id: "command_round_trip",
            title: "Command round trip (POST → 201) and launch to running",
            body: |size, r| Box::pin(commands::run(size, r)),
        },
        Scenario {
            id: "gateway_reads",
            title: "Gateway reads (GET /api/v1/runners, 100 runners)",
            body: |size, r| Box::pin(reads::run(size, r)),
        },
        Scenario {
            id: "footprint",
            title: "Footprint (idle RSS, cold start of stratavore up)",
            body: |size, r| Box::pin(footprint::run(size, r)),
        },
        Scenario {
            id: "search",
            title: "Search (embedding per chunk; search latency by corpus size)",
            body: |size, r| Box::pin(search::run(size, r)),
        },
        Scenario {
            id: "rebuild",
            title: "Rebuild of the gateway's projections",
            body: |size, r| Box::pin(rebuild::run(size, r)),
        },
        Scenario {
            id: "supervision_scale",
            title: "Supervision scale (runners under one supervisor)",
            body: |size, r| Box::pin(supervision::run(size, r)),
        },
    ]
}

impl Scenario {
    /// Run it, timing it and noting the machine's load around it; a
    /// failure is recorded with its cause rather than returned.
    pub async fn run(&self, size: Size) -> ScenarioResult {
        let mut result = ScenarioResult::new(self.id, self.title);
        result.started_at = crate::report::now_rfc3339();
        result.load_before = load_average();
        let started = Instant::now();
        tracing::info!(scenario = self.id, "running");
        if let Err(e) = (self.body)(size, &mut result).await {
            tracing::error!(
                scenario = self.id,
                error = format!("{e:#}"),
                "could not run"
            );
            result.status = Status::Failed;
            result.reason = Some(format!("{e:#}"));
            result.figures.clear();
        }
        result.seconds = started.elapsed().as_secs_f64();
        result.load_after = load_average();
        result
    }

    /// Recorded as not run in this invocation.
    pub fn skipped(&self, why: &str) -> ScenarioResult {
        let mut result = ScenarioResult::new(self.id, self.title);
        result.started_at = crate::report::now_rfc3339();
        result.status = Status::Skipped;
        result.reason = Some(why.to_owned());
        result
    }
}
