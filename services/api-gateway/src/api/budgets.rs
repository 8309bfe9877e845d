//! `/api/v1/budgets`: create, list, get, update, delete. Changes are
//! commands the orchestrator decides (it owns budgets); a request answers
//! with the outcome when it arrives within `wait`, else 202 and the
//! command's location. Reads show each budget's standing in its current
//! period from the gateway's read model.

use super::ApiState;
use crate::budget_models::{self, BudgetView};
use crate::commands::Api;
use crate::http::{ApiError, FieldError, IdempotencyKey, Page, PageRequest, ValidJson, Wait};
use crate::read_models::CommandView;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stratavore_budgets::{check_limits, check_target};
use stratavore_events::budget::{
    BudgetAction, BudgetCommand, BudgetPeriod, BudgetRef, BudgetScope, CreateBudget, UpdateBudget,
};
use uuid::Uuid;

/// The warning threshold when a request does not say.
const DEFAULT_WARN_PERCENT: u32 = 80;

/// `POST /api/v1/budgets` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    scope: BudgetScope,
    #[serde(default)]
    target: Option<String>,
    period: BudgetPeriod,
    #[serde(default)]
    limit_tokens: Option<u64>,
    #[serde(default)]
    limit_usd: Option<f64>,
    #[serde(default = "default_warn_percent")]
    warn_percent: u32,
    /// Without it, `warn`: a budget stops running agents only when asked.
    #[serde(default = "default_action")]
    action: BudgetAction,
}

fn default_warn_percent() -> u32 {
    DEFAULT_WARN_PERCENT
}

fn default_action() -> BudgetAction {
    BudgetAction::Warn
}

/// `PATCH /api/v1/budgets/{id}` body: absent fields stay, a null limit is
/// removed. Scope and period are what a budget is, so they are not here
/// (an unknown field is refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    #[serde(default, deserialize_with = "present")]
    limit_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    limit_usd: Option<Option<f64>>,
    #[serde(default)]
    warn_percent: Option<u32>,
    #[serde(default)]
    action: Option<BudgetAction>,
}

/// A field that is present (even as null) is `Some`.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn warn_percent(value: u32) -> Result<u8, ApiError> {
    u8::try_from(value)
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| ApiError::validation("warn_percent", "must be from 1 to 100"))
}

fn invalid(bad: stratavore_budgets::InvalidField) -> ApiError {
    ApiError::Validation(vec![FieldError::new(bad.field, bad.message)])
}

/// A path segment that is not a UUID names no budget.
fn budget_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found(id))
}

fn not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::NotFound {
        what: format!("budget {id}"),
    }
}

fn rejection(view: &CommandView, id: Uuid) -> ApiError {
    let reason = view.reason.clone().unwrap_or_else(|| "rejected".into());
    let message = view.message.clone().unwrap_or_default();
    match (reason.as_str(), view.field.as_deref()) {
        ("not_found", _) => not_found(id),
        (_, Some(field)) => ApiError::Validation(vec![FieldError::new(field, message)]),
        _ => ApiError::Conflict {
            reason,
            detail: message,
        },
    }
}

/// Send a budget command and answer with the budget.
async fn submit(
    api: &Api,
    command: BudgetCommand,
    id: Uuid,
    key: Option<&str>,
    wait: std::time::Duration,
    success: StatusCode,
) -> Result<Response, ApiError> {
    let fetch = |subject: String| async move {
        let id = Uuid::parse_str(&subject).map_err(ApiError::internal)?;
        let budget = budget_models::get_budget(&api.pool, id, api.clock.now())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "budget {id} succeeded but is not in the read model"
                ))
            })?;
        Ok((budget, format!("/api/v1/budgets/{id}")))
    };
    let request = super::CommandRequest {
        subject: &id.to_string(),
        key,
        wait,
        success,
    };
    super::submit(api, &command, request, |view| rejection(view, id), fetch).await
}

pub(super) async fn create(
    State(state): State<ApiState>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<CreateBody>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let warn = warn_percent(body.warn_percent)?;
    check_target(body.scope, body.target.as_deref()).map_err(invalid)?;
    check_limits(body.limit_tokens, body.limit_usd, warn).map_err(invalid)?;
    let id = Uuid::now_v7();
    let command = BudgetCommand::Create(CreateBudget {
        budget_id: id,
        scope: body.scope,
        target: body.target,
        period: body.period,
        limit_tokens: body.limit_tokens,
        limit_usd: body.limit_usd,
        warn_percent: warn,
        action: body.action,
    });
    submit(api, command, id, key.as_deref(), wait, StatusCode::CREATED).await
}

pub(super) async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
    ValidJson(body): ValidJson<UpdateBody>,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let id = budget_id(&id)?;
    let warn = body.warn_percent.map(warn_percent).transpose()?;
    // What the read model shows answers a missing budget or a change that
    // would leave it without a limit at once; the orchestrator checks
    // again against the budget as it stands when it decides.
    let current = budget_models::get_budget(&api.pool, id, api.clock.now())
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| not_found(id))?;
    let tokens = body.limit_tokens.unwrap_or(current.limit.tokens);
    let usd = body.limit_usd.unwrap_or(current.limit.usd);
    let current_warn = u8::try_from(current.warn_percent).unwrap_or(100);
    check_limits(tokens, usd, warn.unwrap_or(current_warn)).map_err(invalid)?;
    let command = BudgetCommand::Update(UpdateBudget {
        budget_id: id,
        limit_tokens: body.limit_tokens,
        limit_usd: body.limit_usd,
        warn_percent: warn,
        action: body.action,
    });
    submit(api, command, id, key.as_deref(), wait, StatusCode::OK).await
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    Wait(wait): Wait,
) -> Result<Response, ApiError> {
    let api = state.api()?;
    let id = budget_id(&id)?;
    let known = budget_models::get_budget(&api.pool, id, api.clock.now())
        .await
        .map_err(ApiError::internal)?
        .is_some();
    if !known {
        return Err(not_found(id));
    }
    let command = BudgetCommand::Delete(BudgetRef { budget_id: id });
    let accepted = api
        .accept(&command, &id.to_string(), key.as_deref())
        .await?;
    match api.await_outcome(accepted, wait).await? {
        None => Ok(super::pending(accepted)),
        Some(view) if view.status == "rejected" => Err(rejection(&view, id)),
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<BudgetView>, ApiError> {
    let api = state.api()?;
    let id = budget_id(&id)?;
    budget_models::get_budget(&api.pool, id, api.clock.now())
        .await
        .map_err(ApiError::internal)?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

pub(super) async fn list(
    State(state): State<ApiState>,
    page: PageRequest,
) -> Result<Json<Page<BudgetView>>, ApiError> {
    let api = state.api()?;
    let after = match &page.after {
        Some(a) => Some(
            Uuid::parse_str(a)
                .map_err(|_| ApiError::invalid_parameter("cursor", "not a cursor of this list"))?,
        ),
        None => None,
    };
    let rows = budget_models::list_budgets(&api.pool, after, page.fetch_limit(), api.clock.now())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Page::from_overfetch(rows, &page, |b| {
        b.id.to_string()
    })))
}
