use super::*;
use chrono::Duration;
use stratavore_budgets::period_at;
use stratavore_events::budget::{BudgetPeriod, BudgetRef, BudgetScope, CreateBudget, UpdateBudget};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn create(scope: BudgetScope, target: Option<&str>) -> BudgetCommand {
    BudgetCommand::Create(CreateBudget {
        budget_id: Uuid::from_u128(7),
        scope,
        target: target.map(str::to_owned),
        period: BudgetPeriod::Daily,
        limit_tokens: Some(1000),
        limit_usd: None,
        warn_percent: 80,
        action: BudgetAction::Stop,
    })
}

fn facts<'a>(existing: Option<(&'a BudgetDefinition, bool)>) -> CommandFacts<'a> {
    CommandFacts {
        existing,
        target_exists: true,
        time_zone: "Europe/Paris",
    }
}

fn definition() -> BudgetDefinition {
    let BudgetEvent::Created(c) = decide_command(
        &create(BudgetScope::Project, Some("web")),
        Uuid::nil(),
        &facts(None),
    ) else {
        panic!("created");
    };
    c.budget
}

fn rejection(e: BudgetEvent) -> (String, Option<String>) {
    match e {
        BudgetEvent::Rejected(r) => (r.reason, r.field),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn standing(tokens: u64, period_of: &str) -> Standing {
    let zone = stratavore_budgets::time_zone("Europe/Paris").unwrap();
    Standing {
        budget: definition(),
        period: period_at(BudgetPeriod::Daily, zone, at(period_of)),
        spent: Spend { tokens, usd: 0.0 },
    }
}

#[test]
fn a_created_budget_records_the_configured_time_zone() {
    let b = definition();
    assert_eq!(b.time_zone, "Europe/Paris");
    assert_eq!(b.target.as_deref(), Some("web"));
}

#[test]
fn a_create_naming_a_missing_target_or_a_taken_id_is_refused() {
    let missing = CommandFacts {
        target_exists: false,
        ..facts(None)
    };
    assert_eq!(
        rejection(decide_command(
            &create(BudgetScope::Project, Some("web")),
            Uuid::nil(),
            &missing
        )),
        ("unknown_target".into(), Some("target".into()))
    );
    let b = definition();
    assert_eq!(
        rejection(decide_command(
            &create(BudgetScope::Global, None),
            Uuid::nil(),
            &facts(Some((&b, true)))
        ))
        .0,
        "budget_exists"
    );
}

#[test]
fn an_update_merges_into_the_budget_and_null_removes_a_limit() {
    let b = definition();
    let raise = BudgetCommand::Update(UpdateBudget {
        budget_id: b.budget_id,
        limit_tokens: None,
        limit_usd: Some(Some(2.5)),
        warn_percent: Some(50),
        action: None,
    });
    let BudgetEvent::Updated(u) = decide_command(&raise, Uuid::nil(), &facts(Some((&b, false))))
    else {
        panic!("updated");
    };
    assert_eq!(
        (
            u.budget.limit_tokens,
            u.budget.limit_usd,
            u.budget.warn_percent
        ),
        (Some(1000), Some(2.5), 50)
    );
    let remove_both = BudgetCommand::Update(UpdateBudget {
        budget_id: b.budget_id,
        limit_tokens: Some(None),
        limit_usd: None,
        warn_percent: None,
        action: None,
    });
    assert_eq!(
        rejection(decide_command(
            &remove_both,
            Uuid::nil(),
            &facts(Some((&b, false)))
        )),
        ("invalid".into(), Some("limit_tokens".into()))
    );
}

#[test]
fn a_deleted_budget_cannot_be_changed_or_deleted_again() {
    let b = definition();
    let delete = BudgetCommand::Delete(BudgetRef {
        budget_id: b.budget_id,
    });
    assert!(matches!(
        decide_command(&delete, Uuid::nil(), &facts(Some((&b, false)))),
        BudgetEvent::Deleted(_)
    ));
    assert_eq!(
        rejection(decide_command(
            &delete,
            Uuid::nil(),
            &facts(Some((&b, true)))
        ))
        .0,
        "not_found"
    );
}

#[test]
fn crossing_the_limit_in_the_current_period_stops_a_stop_budgets_runners() {
    let s = standing(1000, "2025-06-10T12:00:00Z");
    let e = evaluate(&s, &[AlertKind::Threshold], at("2025-06-10T12:00:01Z"));
    assert_eq!(e.alerts, [AlertKind::Exceeded]);
    assert!(e.stop_runners);
}

#[test]
fn late_spending_for_a_past_period_alerts_but_stops_nothing() {
    let s = standing(1000, "2025-06-10T12:00:00Z");
    let e = evaluate(&s, &[], at("2025-06-11T12:00:00Z"));
    assert_eq!(e.alerts, [AlertKind::Threshold, AlertKind::Exceeded]);
    assert!(!e.stop_runners);
}

#[test]
fn a_warn_budget_alerts_but_stops_nothing() {
    let mut s = standing(1200, "2025-06-10T12:00:00Z");
    s.budget.action = BudgetAction::Warn;
    let e = evaluate(&s, &[], at("2025-06-10T12:00:00Z"));
    assert_eq!(e.alerts.len(), 2);
    assert!(!e.stop_runners);
}

#[test]
fn an_exhausted_budget_refuses_launches_naming_itself_and_its_period_end() {
    let spent = standing(1000, "2025-06-10T12:00:00Z");
    let fresh = standing(10, "2025-06-10T12:00:00Z");
    assert!(exhausted(std::slice::from_ref(&fresh)).is_none());
    let both = [fresh, spent];
    let found = exhausted(&both).unwrap();
    let message = refusal_message(found);
    assert!(
        message.contains(&found.budget.budget_id.to_string()),
        "{message}"
    );
    // Midnight in Paris, in summer.
    assert!(message.contains("2025-06-10T22:00:00Z"), "{message}");
    assert!(message.contains("1000 of 1000 tokens"), "{message}");
}

#[test]
fn a_raised_limit_or_a_new_period_lets_launches_in_again() {
    let mut s = standing(1000, "2025-06-10T12:00:00Z");
    s.budget.limit_tokens = Some(2000);
    assert!(exhausted(std::slice::from_ref(&s)).is_none());
    let next_day = Standing {
        spent: Spend::default(),
        period: Period {
            start: s.period.end,
            end: s.period.end + Duration::days(1),
        },
        ..standing(1000, "2025-06-10T12:00:00Z")
    };
    assert!(exhausted(&[next_day]).is_none());
}
