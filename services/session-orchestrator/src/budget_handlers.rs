//! Budgets' shell: load what a budget decision needs, decide (pure, in
//! `domain::budgets`), and turn the outcome into entries — budget events on
//! the budget's stream, and for a `stop` budget that ran out, the same
//! graceful stop a user's `stop` makes on each runner in scope.

use crate::budget_store::{self, StoredBudget, budget_stream};
use crate::domain::budgets::{self, CommandFacts, Standing};
use crate::domain::runners;
use crate::domain::spending_runs::{self, Before, Spending, covers};
use crate::handlers::{Orchestrator, SOURCE};
use crate::metrics as m;
use crate::runner_store;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use stratavore_budgets::{AlertKind, Spend, period_in_zone};
use stratavore_consumer::HandleError;
use stratavore_events::budget::{BudgetCommand, BudgetDefinition, BudgetEvent, BudgetScope};
use stratavore_events::process::ProcessEvent;
use stratavore_events::runner::Want;
use stratavore_events::{Envelope, Message};
use stratavore_store::{NewEntry, StoreError};
use uuid::Uuid;

/// A budget's standing in the period holding `at`, with `extra` (the
/// message being decided, not yet in the table) added and that message
/// left out of the sum, so deciding the same message again adds it once.
async fn standing_at(
    conn: &mut PgConnection,
    budget: &BudgetDefinition,
    at: DateTime<Utc>,
    extra: Option<(Uuid, Spend)>,
) -> Result<Standing, HandleError> {
    let period = period_in_zone(budget.period, &budget.time_zone, at);
    let except: Vec<Uuid> = extra.iter().map(|e| e.0).collect();
    let summed = budget_store::spent(conn, budget, period.start, period.end, &except).await?;
    Ok(Standing {
        budget: budget.clone(),
        period,
        spent: extra.map_or(summed, |(_, s)| summed.plus(s)),
    })
}

impl Orchestrator {
    /// The entry of a budget event: a rejection on the command's own
    /// stream, anything else as `version` of the budget's.
    pub(crate) fn budget_entry(
        &self,
        event: &BudgetEvent,
        budget_id: Uuid,
        version: u64,
        cause: &Envelope,
    ) -> NewEntry {
        let stream = match event {
            BudgetEvent::Rejected(_) => crate::handlers::rejection_stream(cause),
            _ => budget_stream(budget_id),
        };
        let version = if matches!(event, BudgetEvent::Rejected(_)) {
            1
        } else {
            version
        };
        NewEntry::of(
            event,
            SOURCE,
            stream,
            version,
            budget_id.to_string(),
            self.clock.now(),
        )
        .caused_by(cause)
    }

    /// A client's create, update or delete. A budget created or changed so
    /// that its current period is already past its threshold or limit
    /// raises those alerts at once (and stops its runners, for `stop`).
    pub(crate) async fn decide_budget_command(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        command: &BudgetCommand,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let budget_id = budgets::budget_of(command);
        let stored = budget_store::load_budget(conn, budget_id).await?;
        let target_exists = match command {
            BudgetCommand::Create(c) => {
                self.target_exists(conn, c.scope, c.target.as_deref())
                    .await?
            }
            _ => true,
        };
        let facts = CommandFacts {
            existing: stored.as_ref().map(|s| (&s.definition, s.deleted)),
            target_exists,
            time_zone: &self.budget_time_zone,
        };
        let event = budgets::decide_command(command, message.id, &facts);
        let version = stored.as_ref().map_or(0, |s| s.version) + 1;
        let mut entries = vec![self.budget_entry(&event, budget_id, version, message)];
        if let BudgetEvent::Created(c) | BudgetEvent::Updated(c) = &event {
            let standing = standing_at(conn, &c.budget, self.clock.now(), None).await?;
            let mut stopped = HashSet::new();
            entries.extend(
                self.alert_entries(conn, &standing, version, message, &mut stopped)
                    .await?,
            );
        }
        Ok(entries)
    }

    async fn target_exists(
        &self,
        conn: &mut PgConnection,
        scope: BudgetScope,
        target: Option<&str>,
    ) -> Result<bool, HandleError> {
        let Some(target) = target else {
            return Ok(true);
        };
        Ok(match scope {
            BudgetScope::Global => true,
            BudgetScope::Project => crate::projections::load_project(conn, target)
                .await?
                .is_some(),
            BudgetScope::Profile => self.profiles.get(target).is_some(),
            BudgetScope::Runner => match Uuid::parse_str(target) {
                Ok(id) => runner_store::load_runner(conn, id).await?.is_some(),
                Err(_) => false,
            },
        })
    }

    /// Usage or a cost reconciliation reported by a node: it counts against
    /// every budget whose scope holds the runner, in the period of the
    /// event's own time; each budget it takes past its threshold or limit
    /// for the first time in that period raises the alert.
    pub(crate) async fn decide_budget_spend(
        &self,
        conn: &mut PgConnection,
        message: &Envelope,
        event: &ProcessEvent,
        (runner_id, spend): (Uuid, Spend),
    ) -> Result<Vec<NewEntry>, HandleError> {
        // The runner's row, not its stream: usage comes every turn of
        // every agent, and folding the stream each time cost more than
        // everything else the orchestrator does with it.
        let launch = runner_store::launches_of(conn, &[runner_id])
            .await?
            .remove(&runner_id);
        if let (ProcessEvent::UsageReported(u), Some((project, profile))) = (event, &launch) {
            crate::metrics::usage(project, profile, u);
        }
        // A runner this orchestrator never launched counts only against
        // global budgets.
        let (project, profile) = launch.unwrap_or_default();
        let mut entries = Vec::new();
        // Two budgets running out at once must not stop one runner twice
        // (the second stop would append at the same version).
        let mut stopped = HashSet::new();
        for stored in
            budget_store::budgets_in_scope(conn, &project, &profile, Some(runner_id)).await?
        {
            let standing = standing_at(
                conn,
                &stored.definition,
                message.time,
                Some((message.id, spend)),
            )
            .await?;
            let alerts = self
                .alert_entries(conn, &standing, stored.version, message, &mut stopped)
                .await?;
            entries.extend(alerts);
        }
        Ok(entries)
    }

    /// Of consecutive process events, how many leading ones decide to
    /// nothing: those that change no runner's lifecycle and, for usage
    /// and reconciliations, take no budget in scope past its threshold or
    /// limit, with the spending of the events before them in the run
    /// counted (see `domain::spending_runs`). A few reads serve the run:
    /// the runners' launches, the live budgets, and each budget's period
    /// touched. The quiet usage is counted for the dashboards here, as
    /// `decide_budget_spend` counts the rest.
    pub(crate) async fn quiet_process_events(
        &self,
        conn: &mut PgConnection,
        messages: &[Envelope],
    ) -> Result<usize, StoreError> {
        let mut events = Vec::new();
        for message in messages {
            // One that does not parse is decided alone, which records why.
            let Ok(event) = ProcessEvent::from_data(&message.type_name, message.data.clone())
            else {
                break;
            };
            let spend = budget_store::spend_of_event(&event);
            let usage = match event {
                ProcessEvent::UsageReported(u) => Some(u),
                _ if spend.is_some() => None,
                other => match self.lifecycle_fact(other) {
                    Some(_) => break,
                    None => None,
                },
            };
            events.push((message, usage, spend));
        }
        let spenders: Vec<Uuid> = events
            .iter()
            .filter_map(|(_, _, spend)| spend.map(|(runner, _)| runner))
            .collect();
        if spenders.is_empty() {
            return Ok(events.len());
        }
        let launches = runner_store::launches_of(conn, &spenders).await?;
        let budgets = budget_store::live_budgets(conn).await?;
        let run: Vec<Spending<'_>> = events
            .iter()
            .map(|(message, _, spend)| match spend {
                Some((runner, spend)) => {
                    // A runner this orchestrator never launched counts only
                    // against global budgets.
                    let (project, profile) = launches.get(runner).map_or(("", ""), |(p, f)| (p, f));
                    Spending {
                        budgets: budgets
                            .iter()
                            .map(|b| &b.definition)
                            .filter(|b| covers(b, project, profile, Some(*runner)))
                            .collect(),
                        spend: *spend,
                        at: message.time,
                    }
                }
                None => Spending {
                    budgets: Vec::new(),
                    spend: Spend::default(),
                    at: message.time,
                },
            })
            .collect();
        let in_run: Vec<Uuid> = events.iter().map(|(m, _, _)| m.id).collect();
        let mut before = HashMap::new();
        for (budget, period) in spending_runs::periods_touched(&run) {
            let spent =
                budget_store::spent(conn, budget, period.start, period.end, &in_run).await?;
            let fired = budget_store::alerts_fired(conn, budget.budget_id, period.start).await?;
            before.insert((budget.budget_id, period.start), Before { spent, fired });
        }
        let quiet = spending_runs::quiet_prefix(&run, &before, self.clock.now());
        for (_, usage, spend) in &events[..quiet] {
            if let (Some(u), Some((runner, _))) = (usage, spend)
                && let Some((project, profile)) = launches.get(runner)
            {
                crate::metrics::usage(project, profile, u);
            }
        }
        Ok(quiet)
    }

    /// The alerts a standing raises (after the budget's stream version
    /// `version`), and for an exhausted `stop` budget in its current
    /// period, the stops of its runners not in `already_stopped` (which
    /// gains them).
    async fn alert_entries(
        &self,
        conn: &mut PgConnection,
        standing: &Standing,
        version: u64,
        cause: &Envelope,
        already_stopped: &mut HashSet<Uuid>,
    ) -> Result<Vec<NewEntry>, HandleError> {
        let budget_id = standing.budget.budget_id;
        let fired = budget_store::alerts_fired(conn, budget_id, standing.period.start).await?;
        let evaluation = budgets::evaluate(standing, &fired, self.clock.now());
        let mut entries = Vec::new();
        let mut stopped = Vec::new();
        if evaluation.stop_runners {
            let (stops, ids) = self
                .stop_runners_in_scope(conn, &standing.budget, cause, already_stopped)
                .await?;
            entries.extend(stops);
            stopped = ids;
        }
        let mut v = version;
        let mut alerts = Vec::new();
        for kind in evaluation.alerts {
            v += 1;
            let ids = if kind == AlertKind::Exceeded {
                std::mem::take(&mut stopped)
            } else {
                Vec::new()
            };
            let event = budgets::alert_event(kind, standing, ids);
            metrics::counter!(m::BUDGET_EVENTS_TOTAL, "kind" => kind.as_str()).increment(1);
            alerts.push(self.budget_entry(&event, budget_id, v, cause));
        }
        // The alert first, then the stops it caused, as a reader expects.
        alerts.extend(entries);
        Ok(alerts)
    }

    /// Stop every runner in the budget's scope that has not ended, as a
    /// user's `stop` would (graceful; the session stays resumable).
    async fn stop_runners_in_scope(
        &self,
        conn: &mut PgConnection,
        budget: &BudgetDefinition,
        cause: &Envelope,
        already_stopped: &mut HashSet<Uuid>,
    ) -> Result<(Vec<NewEntry>, Vec<Uuid>), HandleError> {
        let mut entries = Vec::new();
        let mut stopped = Vec::new();
        for runner_id in budget_store::active_runners_in_scope(conn, budget).await? {
            if !already_stopped.insert(runner_id) {
                continue;
            }
            let Some((runner, version)) = runner_store::load_runner(conn, runner_id).await? else {
                continue;
            };
            // A runner already stopping needs nothing more; a refusal
            // cannot happen for a runner that has not ended.
            let Ok(decision) = runners::decide_control(&runner, Want::Stopped) else {
                continue;
            };
            if decision.events.is_empty() {
                continue;
            }
            stopped.push(runner_id);
            entries.extend(
                self.decided(conn, &runner, version, decision, cause)
                    .await?,
            );
        }
        Ok((entries, stopped))
    }

    /// A launch's budgets in scope, each in its current period by the
    /// orchestrator's clock.
    pub(crate) async fn launch_budgets(
        &self,
        conn: &mut PgConnection,
        project: &str,
        profile: &str,
    ) -> Result<Vec<Standing>, HandleError> {
        let now = self.clock.now();
        let mut standings = Vec::new();
        for stored in budget_store::budgets_in_scope(conn, project, profile, None).await? {
            let StoredBudget { definition, .. } = stored;
            standings.push(standing_at(conn, &definition, now, None).await?);
        }
        Ok(standings)
    }
}
