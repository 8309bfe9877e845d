-- Budgets as the API shows them: definitions and alerts folded from the
-- orchestrator's budget events, and spending folded from the nodes'
-- usage and reconciliation events (one row per event id, at the event's
-- own time). A budget's "used" is summed over its period at read time,
-- joined to `runners` for its scope, exactly as the orchestrator sums it
-- for its decisions: both fold the same events, so both agree and a
-- rebuild gives the same totals.
CREATE TABLE budgets (
    budget_id     uuid PRIMARY KEY,
    scope         text NOT NULL,
    target        text,
    period        text NOT NULL,
    time_zone     text NOT NULL,
    limit_tokens  bigint,
    limit_usd     double precision,
    warn_percent  smallint NOT NULL,
    action        text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE budget_alerts (
    budget_id        uuid NOT NULL,
    period_start     timestamptz NOT NULL,
    kind             text NOT NULL,
    raised_at        timestamptz NOT NULL,
    used_tokens      bigint NOT NULL,
    used_usd         double precision NOT NULL,
    stopped_runners  uuid[] NOT NULL,
    PRIMARY KEY (budget_id, period_start, kind)
);

CREATE TABLE budget_spend (
    message_id  uuid PRIMARY KEY,
    runner_id   uuid NOT NULL,
    time        timestamptz NOT NULL,
    tokens      bigint NOT NULL,
    cost_usd    double precision NOT NULL
);
CREATE INDEX budget_spend_by_time ON budget_spend (time);
CREATE INDEX budget_spend_by_runner ON budget_spend (runner_id, time);
