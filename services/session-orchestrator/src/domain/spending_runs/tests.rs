use super::*;
use chrono::Duration;
use stratavore_events::budget::{BudgetAction, BudgetPeriod};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn budget(id: u128, scope: BudgetScope, target: Option<&str>, tokens: u64) -> BudgetDefinition {
    BudgetDefinition {
        budget_id: Uuid::from_u128(id),
        scope,
        target: target.map(str::to_owned),
        period: BudgetPeriod::Daily,
        time_zone: "UTC".into(),
        limit_tokens: Some(tokens),
        limit_usd: None,
        warn_percent: 80,
        action: BudgetAction::Stop,
    }
}

fn tokens(n: u64) -> Spend {
    Spend {
        tokens: n,
        usd: 0.0,
    }
}

fn spending<'a>(budgets: &[&'a BudgetDefinition], n: u64, time: DateTime<Utc>) -> Spending<'a> {
    Spending {
        budgets: budgets.to_vec(),
        spend: tokens(n),
        at: time,
    }
}

fn before(
    entries: &[(&BudgetDefinition, DateTime<Utc>, u64, Vec<AlertKind>)],
) -> HashMap<PeriodKey, Before> {
    entries
        .iter()
        .map(|(b, time, spent, fired)| {
            (
                (b.budget_id, period_of(b, *time).start),
                Before {
                    spent: tokens(*spent),
                    fired: fired.clone(),
                },
            )
        })
        .collect()
}

#[test]
fn a_scope_holds_the_runners_of_its_project_profile_or_runner_and_global_holds_all() {
    let runner = Uuid::from_u128(9);
    let holds = |b: &BudgetDefinition, r| covers(b, "web", "claude", r);
    assert!(holds(&budget(1, BudgetScope::Global, None, 1), None));
    assert!(holds(
        &budget(1, BudgetScope::Project, Some("web"), 1),
        None
    ));
    assert!(!holds(
        &budget(1, BudgetScope::Project, Some("api"), 1),
        Some(runner)
    ));
    assert!(holds(
        &budget(1, BudgetScope::Profile, Some("claude"), 1),
        None
    ));
    assert!(!holds(
        &budget(1, BudgetScope::Profile, Some("codex"), 1),
        None
    ));
    let own = budget(1, BudgetScope::Runner, Some(&runner.to_string()), 1);
    assert!(holds(&own, Some(runner)));
    assert!(!holds(&own, Some(Uuid::from_u128(8))));
    assert!(!holds(&own, None), "a launch is no runner yet");
}

#[test]
fn the_run_is_quiet_up_to_the_message_that_crosses_the_threshold() {
    let b = budget(1, BudgetScope::Global, None, 1000);
    let now = at("2026-11-27T12:00:00Z");
    let run = [
        spending(&[&b], 50, now),
        spending(&[], 0, now),
        spending(&[&b], 40, now),
        spending(&[&b], 20, now), // 700 + 110 = 810 ≥ 800
        spending(&[&b], 1, now),
    ];
    let standing = before(&[(&b, now, 700, vec![])]);
    assert_eq!(quiet_prefix(&run, &standing, now), 3);
    // With the threshold raised already, only the limit alerts.
    let warned = before(&[(&b, now, 700, vec![AlertKind::Threshold])]);
    assert_eq!(quiet_prefix(&run, &warned, now), 5);
    let nearly = before(&[(&b, now, 900, vec![AlertKind::Threshold])]);
    assert_eq!(quiet_prefix(&run, &nearly, now), 3, "900 + 110 ≥ 1000");
}

#[test]
fn each_message_counts_in_the_period_of_its_own_time() {
    let b = budget(1, BudgetScope::Global, None, 1000);
    let today = at("2026-11-27T23:59:00Z");
    let tomorrow = today + Duration::minutes(2);
    let run = [
        spending(&[&b], 100, today),
        spending(&[&b], 700, tomorrow),
        spending(&[&b], 100, today), // 600 + 200 = 800 ≥ 800 today
    ];
    let standing = before(&[(&b, today, 600, vec![]), (&b, tomorrow, 0, vec![])]);
    assert_eq!(quiet_prefix(&run, &standing, tomorrow), 2);
    assert_eq!(periods_touched(&run).len(), 2);
    // A period the shell did not look up ends the quiet part.
    let partial = before(&[(&b, today, 0, vec![])]);
    assert_eq!(quiet_prefix(&run, &partial, tomorrow), 1);
}

#[test]
fn messages_that_spend_nothing_are_quiet_and_touch_no_period() {
    let now = at("2026-11-27T12:00:00Z");
    let run = [spending(&[], 0, now), spending(&[], 0, now)];
    assert_eq!(quiet_prefix(&run, &HashMap::new(), now), 2);
    assert!(periods_touched(&run).is_empty());
}

/// The quiet prefix as deciding one message at a time finds it: each
/// message's standing summed afresh from everything before it.
fn one_at_a_time(
    run: &[Spending<'_>],
    before: &HashMap<PeriodKey, Before>,
    now: DateTime<Utc>,
) -> usize {
    for (i, spending) in run.iter().enumerate() {
        for &budget in &spending.budgets {
            let period = period_of(budget, spending.at);
            let base = &before[&(budget.budget_id, period.start)];
            let spent = run[..=i]
                .iter()
                .filter(|s| {
                    s.budgets.iter().any(|b| b.budget_id == budget.budget_id)
                        && period.contains(s.at)
                })
                .fold(base.spent, |sum, s| sum.plus(s.spend));
            let standing = Standing {
                budget: budget.clone(),
                period,
                spent,
            };
            if !evaluate(&standing, &base.fired, now).alerts.is_empty() {
                return i;
            }
        }
    }
    run.len()
}

#[test]
fn the_quiet_prefix_is_what_deciding_one_message_at_a_time_finds() {
    let budgets = [
        budget(1, BudgetScope::Global, None, 5_000),
        budget(2, BudgetScope::Project, Some("web"), 1_500),
        BudgetDefinition {
            period: BudgetPeriod::Hourly,
            ..budget(3, BudgetScope::Profile, Some("claude"), 900)
        },
    ];
    let start = at("2026-11-27T22:30:00Z");
    let mut seed = 42_u64;
    let mut below = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut quiet_runs = 0;
    for _ in 0..300 {
        let len = 1 + below(30) as usize;
        let run: Vec<Spending<'_>> = (0..len)
            .map(|_| {
                let in_scope: Vec<&BudgetDefinition> =
                    budgets.iter().filter(|_| below(3) > 0).collect();
                let time = start + Duration::minutes(i64::try_from(below(180)).unwrap());
                spending(&in_scope, below(120), time)
            })
            .collect();
        let mut standing = HashMap::new();
        for (b, period) in periods_touched(&run) {
            let fired = match below(4) {
                0 => vec![AlertKind::Threshold],
                1 => vec![AlertKind::Threshold, AlertKind::Exceeded],
                _ => vec![],
            };
            let limit = b.limit_tokens.unwrap();
            standing.insert(
                (b.budget_id, period.start),
                Before {
                    spent: tokens(below(limit)),
                    fired,
                },
            );
        }
        let now = start + Duration::hours(1);
        let quiet = quiet_prefix(&run, &standing, now);
        assert_eq!(quiet, one_at_a_time(&run, &standing, now));
        quiet_runs += usize::from(quiet == run.len());
    }
    // Both outcomes are exercised.
    assert!((30..270).contains(&quiet_runs), "{quiet_runs}");
}
